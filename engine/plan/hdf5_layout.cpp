#include "plan/hdf5_layout.hpp"

#include <algorithm>
#include <map>
#include <string>
#include <tuple>

#include "common/error.hpp"

namespace m2h::plan {

std::uint64_t tensor_rows(const tensors::OutputTensor& t) { return t.shape.empty() ? 1 : t.shape[0]; }

std::uint64_t tensor_row_bytes(const tensors::OutputTensor& t) {
    std::uint64_t b = dtype_size(t.dtype);
    for (std::size_t d = 1; d < t.shape.size(); ++d) b *= t.shape[d];
    return b;
}

std::vector<std::uint64_t> hdf5_chunk_rows(const std::vector<tensors::OutputTensor>& tensors, std::uint64_t target_bytes) {
    std::vector<std::uint64_t> rows;
    rows.reserve(tensors.size());
    for (const auto& t : tensors) {
        const std::uint64_t row = std::max<std::uint64_t>(tensor_row_bytes(t), 1);
        rows.push_back(std::clamp<std::uint64_t>(target_bytes / row, 1, std::max<std::uint64_t>(tensor_rows(t), 1)));
    }
    return rows;
}

Hdf5Writes hdf5_writes(const TransferPlan& plan, const OutputLayout& layout, const std::vector<tensors::OutputTensor>& tensors) {
    // Tensors by (file, offset), to find those a window overlaps.
    std::map<std::pair<std::size_t, std::uint64_t>, std::uint32_t> at;
    for (std::uint32_t i = 0; i < tensors.size(); ++i)
        if (tensors[i].nbytes()) at.emplace(std::pair{layout.placement[i].file, layout.placement[i].offset}, i);

    Hdf5Writes w;
    w.segments.resize(plan.windows.size());
    for (std::size_t wi = 0; wi < plan.windows.size(); ++wi) {
        const auto& win = plan.windows[wi];
        const std::uint64_t end = win.offset + win.size;
        auto it = at.upper_bound({win.file, win.offset});
        if (it != at.begin()) --it;
        for (; it != at.end() && it->first.first == win.file && it->first.second < end; ++it) {
            const auto& t = tensors[it->second];
            const std::uint64_t t_begin = it->first.second, t_end = t_begin + t.nbytes();
            const std::uint64_t from = std::max(t_begin, win.offset), to = std::min(t_end, end);
            if (from >= to) continue;
            const std::uint64_t row = tensor_row_bytes(t);
            if ((from - t_begin) % row || (to - t_begin) % row)
                throw Error("plan", "window " + std::to_string(wi) + " cuts a row of " + t.name);
            w.segments[wi].push_back({it->second, (from - t_begin) / row, (to - from) / row, from - win.offset});
        }
    }
    w.round_tensors.resize(plan.rounds.size());
    for (std::size_t r = 0; r < plan.rounds.size(); ++r) {
        auto& list = w.round_tensors[r];
        const auto& round = plan.rounds[r];
        for (auto wi = round.first_window; wi < round.first_window + round.window_count; ++wi)
            for (const auto& s : w.segments[wi]) list.push_back(s.tensor);
        std::sort(list.begin(), list.end());
        list.erase(std::unique(list.begin(), list.end()), list.end());
    }
    return w;
}

}  // namespace m2h::plan
