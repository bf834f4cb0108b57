#include "plan/conversion_plan.hpp"

namespace m2h::plan {

ConversionPlan make_conversion_plan(const tensors::SourceIndex& index, const model::Mapping& mapping,
                                    std::uint64_t max_shard_size, const PlanLimits& limits,
                                    const std::vector<std::uint64_t>& cut_rows) {
    ConversionPlan plan;
    plan.layout = layout_safetensors(mapping.outputs, max_shard_size);

    std::vector<OutputRegion> regions;
    for (std::size_t i = 0; i < mapping.outputs.size(); ++i) {
        const auto& t = mapping.outputs[i];
        const auto& at = plan.layout.placement[i];
        std::uint64_t unit = dtype_size(t.dtype);
        for (std::size_t d = 1; d < t.shape.size(); ++d) unit *= t.shape[d];
        if (!cut_rows.empty()) unit *= cut_rows.at(i);
        regions.push_back({static_cast<std::uint32_t>(at.file), at.offset, t.nbytes(), unit});
    }

    std::vector<CopySpec> copies;
    copies.reserve(mapping.copies.size());
    for (std::size_t i = 0; i < mapping.copies.size(); ++i) {
        const auto& c = mapping.copies[i];
        const auto& src = index.tensors[c.src];
        const auto& dst = mapping.outputs[c.dst];
        const auto& at = plan.layout.placement[c.dst];
        const std::uint64_t ses = dtype_size(src.dtype), des = dtype_size(dst.dtype);
        CopySpec s;
        s.src_file = src.file;
        s.src_offset = src.offset + c.src_offset * ses;
        s.src_pitch = c.src_pitch * ses;
        s.src_dtype = src.dtype;
        s.dst_file = static_cast<std::uint32_t>(at.file);
        s.dst_offset = at.offset + c.dst_offset * des;
        s.dst_pitch = c.dst_pitch * des;
        s.dst_dtype = dst.dtype;
        s.cols = c.cols;
        s.rows = c.rows;
        s.verify_only = c.verify_only;
        s.tag = static_cast<std::uint32_t>(i);
        copies.push_back(s);
        plan.source_bytes += c.rows * c.cols * ses;
        if (!c.verify_only) plan.model_bytes += c.rows * c.cols * ses;
    }
    plan.transfers = plan_transfers(copies, regions, static_cast<std::uint32_t>(index.files.size()), limits);
    return plan;
}

}  // namespace m2h::plan
