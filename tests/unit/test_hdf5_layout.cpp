// The HDF5 side of the plan: windows cut only at chunk boundaries, so every chunk is written by one rank in
// one round, and the window segments tile every tensor exactly once, for many rank counts and budgets.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "io/hdf5_writer.hpp"
#include "plan/conversion_plan.hpp"
#include "plan/hdf5_layout.hpp"

using namespace m2h;
using namespace m2h::plan;
using namespace m2h::tensors;

namespace {

// One source file holding every tensor contiguously; each HF tensor is one copy of its source tensor.
struct Case {
    SourceIndex index;
    model::Mapping mapping;
};

Case make_case(const std::vector<OutputTensor>& tensors) {
    Case c;
    c.index.files.push_back({"/src.bin"});
    std::uint64_t at = 0;
    for (std::uint32_t i = 0; i < tensors.size(); ++i) {
        const auto& t = tensors[i];
        SourceTensor s;
        s.key = "src." + t.name;
        s.dtype = t.dtype;
        s.shape = t.shape;
        s.offset = at;
        at += t.nbytes();
        c.index.tensors.push_back(s);
        const std::uint64_t n = t.nbytes() / dtype_size(t.dtype);
        c.mapping.copies.push_back({i, 0, n, i, 0, n, n, 1, false});
    }
    c.mapping.outputs = tensors;
    return c;
}

std::vector<OutputTensor> sample_tensors() {
    return {
        {"model.embed_tokens.weight", DType::BF16, {1000, 96}},
        {"model.layers.0.self_attn.q_proj.weight", DType::BF16, {96, 96}},
        {"model.layers.0.input_layernorm.weight", DType::F32, {96}},
        {"model.layers.0.mlp.down_proj.weight", DType::F16, {96, 250}},
        {"model.norm.weight", DType::BF16, {96}},
        {"lm_head.weight", DType::BF16, {1000, 96}},
        {"big.vector", DType::F32, {70000}},
        {"empty", DType::F32, {0, 5}},
    };
}

}  // namespace

TEST(Hdf5Layout, ChunkRowsFitTheTarget) {
    const auto tensors = sample_tensors();
    const auto rows = hdf5_chunk_rows(tensors, 4096);
    ASSERT_EQ(rows.size(), tensors.size());
    EXPECT_EQ(rows[0], 4096u / (96 * 2));  // whole rows within the target
    EXPECT_EQ(rows[2], 96u);               // never more than the tensor's rows
    EXPECT_EQ(rows[6], 1024u);             // 1-d: elements
    EXPECT_EQ(rows[7], 1u);                // empty: at least one
    EXPECT_EQ(hdf5_chunk_rows({{"wide", DType::F32, {4, 5000}}}, 4096)[0], 1u);  // a row above the target: one
    EXPECT_EQ(tensor_rows({"scalar", DType::F32, {}}), 1u);
    EXPECT_EQ(tensor_row_bytes({"m", DType::BF16, {3, 4, 5}}), 40u);
}

TEST(Hdf5Layout, EveryChunkInOneWindowAndSegmentsTileTheTensors) {
    const auto tensors = sample_tensors();
    const Case c = make_case(tensors);
    for (int ranks : {1, 2, 3, 4, 7}) {
        for (std::uint64_t budget : {std::uint64_t{3000}, std::uint64_t{20000}, std::uint64_t{1} << 30}) {
            SCOPED_TRACE("ranks " + std::to_string(ranks) + " budget " + std::to_string(budget));
            PlanLimits limits;
            limits.ranks = ranks;
            limits.round_bytes = budget;
            limits.window_bytes = std::min<std::uint64_t>(budget, 64u << 20);
            const auto chunk_rows = hdf5_chunk_rows(tensors, std::min<std::uint64_t>(1u << 20, limits.window_bytes));
            const auto plan = make_conversion_plan(c.index, c.mapping, ~std::uint64_t{0}, limits, chunk_rows);
            ASSERT_EQ(plan.layout.files.size(), 1u);
            const auto writes = hdf5_writes(plan.transfers, plan.layout, tensors);
            ASSERT_EQ(writes.segments.size(), plan.transfers.windows.size());
            ASSERT_EQ(writes.round_tensors.size(), plan.transfers.rounds.size());

            // chunk (tensor, index) -> the window writing it; rows covered per tensor
            std::map<std::pair<std::uint32_t, std::uint64_t>, std::size_t> chunk_window;
            std::vector<std::vector<int>> covered(tensors.size());
            for (std::size_t i = 0; i < tensors.size(); ++i) covered[i].assign(tensor_rows(tensors[i]), 0);
            for (std::size_t w = 0; w < writes.segments.size(); ++w) {
                const auto& win = plan.transfers.windows[w];
                std::uint64_t at = 0;
                for (const auto& s : writes.segments[w]) {
                    const auto& t = tensors[s.tensor];
                    EXPECT_EQ(s.window_offset, at) << "segments follow each other in the window";
                    EXPECT_EQ(win.offset + s.window_offset,
                              plan.layout.placement[s.tensor].offset + s.first_row * tensor_row_bytes(t));
                    at += s.rows * tensor_row_bytes(t);
                    for (std::uint64_t r = s.first_row; r < s.first_row + s.rows; ++r) {
                        ++covered[s.tensor][r];
                        const auto [it, added] = chunk_window.emplace(std::pair{s.tensor, r / chunk_rows[s.tensor]}, w);
                        EXPECT_TRUE(added || it->second == w) << t.name << " chunk " << r / chunk_rows[s.tensor]
                                                              << " is written by two windows";
                    }
                }
                EXPECT_EQ(at, win.size) << "segments cover the window";
            }
            for (std::size_t i = 0; i < tensors.size(); ++i)
                for (auto n : covered[i]) ASSERT_EQ(n, tensors[i].nbytes() ? 1 : 0) << tensors[i].name;

            for (std::size_t r = 0; r < plan.transfers.rounds.size(); ++r) {
                const auto& round = plan.transfers.rounds[r];
                std::set<std::uint32_t> touched;
                for (auto w = round.first_window; w < round.first_window + round.window_count; ++w)
                    for (const auto& s : writes.segments[w]) touched.insert(s.tensor);
                EXPECT_EQ(writes.round_tensors[r], std::vector<std::uint32_t>(touched.begin(), touched.end()));
            }
        }
    }
}

TEST(Hdf5Layout, RowRunsMergeWhenAdjacentInRowsAndMemory) {
    std::vector<std::byte> buffer(100);
    const std::byte* b = buffer.data();
    using m2h::io::merge_row_runs;
    using m2h::io::RowRun;
    // Back to back in rows and memory, given out of order: one run.
    auto m = merge_row_runs({{4, 2, b + 20}, {0, 4, b}, {6, 1, b + 30}}, 5);
    ASSERT_EQ(m.size(), 1u);
    EXPECT_EQ(m[0].first_row, 0u);
    EXPECT_EQ(m[0].rows, 7u);
    EXPECT_EQ(m[0].data, b);
    // Adjacent rows in other memory, or a gap in rows: kept apart, sorted by row; empty runs dropped.
    m = merge_row_runs({{3, 1, b + 50}, {0, 3, b}, {9, 1, b + 20}, {5, 0, b}}, 5);
    ASSERT_EQ(m.size(), 3u);
    EXPECT_EQ(m[0].first_row, 0u);
    EXPECT_EQ(m[1].first_row, 3u);
    EXPECT_EQ(m[2].first_row, 9u);
}
