// A plan made for one iteration and relocated to the next (same layout, tensors at other offsets) must be the
// plan that planning the next iteration from scratch gives; anything else in the layout changing must stop the
// reuse.
#include <gtest/gtest.h>

#include <tuple>

#include "model/model_spec.hpp"
#include "plan/conversion_plan.hpp"
#include "plan/plan_reuse.hpp"
#include "simulated_checkpoint.hpp"

using namespace m2h;
using namespace m2h::plan;

namespace {

auto fields(const Piece& p) {
    return std::tie(p.src_file, p.src_offset, p.src_pitch, p.src_dtype, p.dst_file, p.dst_offset, p.dst_pitch,
                    p.dst_dtype, p.cols, p.rows, p.verify_only, p.tag, p.reader, p.window);
}

// The index of a later iteration: the same tensors, each starting somewhere else (some earlier, some later).
tensors::SourceIndex moved(tensors::SourceIndex index) {
    for (std::size_t i = 0; i < index.tensors.size(); ++i) index.tensors[i].offset += 4096 + 40 * i;
    for (auto& f : index.files) f.path = "/other/iter_0000200/" + f.path;
    index.tensors.front().offset -= 1000;  // and one earlier than before
    return index;
}

struct Planned {
    model::Mapping mapping;
    ConversionPlan conversion;
};

Planned plan_for(const tensors::SourceIndex& index, Readers readers, int ranks) {
    const auto spec = model::model_spec_from_args(index.args, {}, "test");
    Planned p;
    p.mapping = model::map_tensors(spec, index, {});
    PlanLimits limits;
    limits.ranks = ranks;
    limits.round_bytes = 256;
    limits.window_bytes = 128;
    limits.readers = readers;
    p.conversion = make_conversion_plan(index, p.mapping, 1500, limits);
    return p;
}

m2h::testing::World world() {
    m2h::testing::Dims d;
    d.tp = 2;
    d.pp = 2;
    auto w = m2h::testing::make_world(d);
    w.index.files = {{"a.pt"}, {"b.pt"}};
    for (std::size_t i = 0; i < w.index.tensors.size(); ++i) w.index.tensors[i].file = static_cast<std::uint32_t>(i % 2);
    return w;
}

}  // namespace

TEST(PlanReuse, RelocatedPlanIsTheFreshPlan) {
    const auto first = world().index;
    const auto next = moved(first);
    ASSERT_TRUE(same_layout(first, next));
    for (const int ranks : {1, 3, 4}) {
        const auto old = plan_for(first, Readers::writers, ranks);
        const auto fresh = plan_for(next, Readers::writers, ranks);
        const auto reused = relocate(old.conversion.transfers, old.mapping, first, next);
        ASSERT_EQ(reused.pieces.size(), fresh.conversion.transfers.pieces.size());
        for (std::size_t i = 0; i < reused.pieces.size(); ++i)
            EXPECT_EQ(fields(reused.pieces[i]), fields(fresh.conversion.transfers.pieces[i])) << "piece " << i;
        EXPECT_EQ(reused.windows.size(), fresh.conversion.transfers.windows.size());
        EXPECT_EQ(reused.rounds.size(), fresh.conversion.transfers.rounds.size());
        EXPECT_EQ(reused.total_bytes, fresh.conversion.transfers.total_bytes);
        // And the relocation did move something: the old plan read elsewhere.
        EXPECT_NE(fields(old.conversion.transfers.pieces.front()), fields(fresh.conversion.transfers.pieces.front()));
    }
}

TEST(PlanReuse, RelocatedPiecesReadTheSameTensorBytesWithFileReaders) {
    // Readers that own whole files may be balanced differently; what each piece reads must still be the fresh
    // plan's bytes.
    const auto first = world().index;
    const auto next = moved(first);
    const auto old = plan_for(first, Readers::files, 3);
    const auto fresh = plan_for(next, Readers::files, 3);
    const auto reused = relocate(old.conversion.transfers, old.mapping, first, next);
    ASSERT_EQ(reused.pieces.size(), fresh.conversion.transfers.pieces.size());
    for (std::size_t i = 0; i < reused.pieces.size(); ++i) {
        const auto& r = reused.pieces[i];
        const auto& f = fresh.conversion.transfers.pieces[i];
        EXPECT_EQ(std::tie(r.src_file, r.src_offset, r.dst_offset, r.rows, r.cols, r.tag),
                  std::tie(f.src_file, f.src_offset, f.dst_offset, f.rows, f.cols, f.tag));
    }
}

TEST(PlanReuse, AnyOtherChangeIsAnotherLayout) {
    const auto first = world().index;
    const auto changed = [&](auto change) {
        auto next = moved(first);
        change(next);
        return next;
    };
    EXPECT_FALSE(same_layout(first, changed([](auto& i) { i.tensors.back().shape.back() += 1; })));
    EXPECT_FALSE(same_layout(first, changed([](auto& i) { i.tensors[1].key += "_x"; })));
    EXPECT_FALSE(same_layout(first, changed([](auto& i) { i.tensors[2].dtype = DType::BF16; })));
    EXPECT_FALSE(same_layout(first, changed([](auto& i) { i.tensors[3].file ^= 1; })));
    EXPECT_FALSE(same_layout(first, changed([](auto& i) { i.tensors[4].tp_rank ^= 1; })));
    EXPECT_FALSE(same_layout(first, changed([](auto& i) { i.tensors.pop_back(); })));
    EXPECT_FALSE(same_layout(first, changed([](auto& i) { i.files.push_back({"c.pt"}); })));
    EXPECT_FALSE(same_layout(first, changed([](auto& i) { i.files[0].zstd = true; })));
    EXPECT_FALSE(same_layout(first, changed([](auto& i) { i.format = "torch_dist"; })));
    EXPECT_TRUE(same_layout(first, changed([](auto& i) { i.args["curr_iteration"] = 200; })));
}
