// The transfer plan is checked by executing it without MPI: every piece is read from in-memory source
// files, routed through its window (or streamed, for the ranges the writer streams), and the result must equal
// applying the copies directly.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <algorithm>
#include <map>
#include <set>

#include "common/error.hpp"
#include "plan/streamed_ranges.hpp"
#include "plan/transfer_plan.hpp"

using namespace m2h;
using namespace m2h::plan;

namespace {

using Bytes = std::vector<std::byte>;

Bytes random_bytes(std::size_t n, std::mt19937& rng) {
    Bytes b(n);
    for (auto& x : b) x = static_cast<std::byte>(rng() & 0xFF);
    return b;
}

// Direct application of the copies: the reference result.
std::vector<Bytes> apply_directly(const std::vector<CopySpec>& copies, const std::vector<Bytes>& src,
                                  std::vector<std::uint64_t> out_sizes) {
    std::vector<Bytes> out;
    for (auto n : out_sizes) out.emplace_back(n, std::byte{0});
    for (const auto& c : copies) {
        if (c.verify_only) continue;
        for (std::uint64_t r = 0; r < c.rows; ++r)
            std::memcpy(out[c.dst_file].data() + c.dst_offset + r * c.dst_pitch,
                        src[c.src_file].data() + c.src_offset + r * c.src_pitch, c.dst_row_bytes());
    }
    return out;
}

// Runs the plan as the executor does (same dtypes only) and checks the per-round limits.
std::vector<Bytes> execute(const TransferPlan& plan, const std::vector<Bytes>& src, std::vector<std::uint64_t> out_sizes,
                           const PlanLimits& limits) {
    std::vector<Bytes> out;
    for (auto n : out_sizes) out.emplace_back(n, std::byte{0});
    std::vector<int> written(0);
    for (const auto& round : plan.rounds) {
        std::vector<std::uint64_t> send(static_cast<std::size_t>(limits.ranks)), recv(static_cast<std::size_t>(limits.ranks));
        for (auto w = round.first_window; w < round.first_window + round.window_count; ++w) {
            const auto& win = plan.windows[w];
            Bytes buffer(win.size, std::byte{0xEE});
            for (auto i = win.first_piece; i < win.first_piece + win.piece_count; ++i) {
                const auto& p = plan.pieces[i];
                EXPECT_EQ(p.window, w);
                send[static_cast<std::size_t>(p.reader)] += p.dst_bytes();
                recv[static_cast<std::size_t>(win.writer)] += p.dst_bytes();
                for (std::uint64_t r = 0; r < p.rows; ++r) {
                    const auto* from = src[p.src_file].data() + p.src_offset + r * p.src_pitch;
                    auto* to = buffer.data() + (p.dst_offset - win.offset) + r * p.dst_pitch;
                    EXPECT_GE(p.dst_offset + r * p.dst_pitch, win.offset);
                    EXPECT_LE(p.dst_offset + r * p.dst_pitch + p.dst_row_bytes(), win.offset + win.size);
                    if (p.verify_only)
                        EXPECT_EQ(std::memcmp(to, from, p.dst_row_bytes()), 0);
                    else
                        std::memcpy(to, from, p.dst_row_bytes());
                }
            }
            std::memcpy(out[win.file].data() + win.offset, buffer.data(), win.size);
        }
        if (round.window_count > 1)
            for (int r = 0; r < limits.ranks; ++r) {
                EXPECT_LE(send[static_cast<std::size_t>(r)], limits.round_bytes);
                EXPECT_LE(recv[static_cast<std::size_t>(r)], limits.round_bytes);
            }
    }
    return out;
}

struct Case {
    std::vector<Bytes> src;
    std::vector<CopySpec> copies;
    std::vector<OutputRegion> regions;
    std::vector<std::uint64_t> out_sizes;
};

// Output tensors of shape [rows, cols] (bf16) assembled from two "TP shards" split on dim 1 (row-parallel) and
// on dim 0, plus a 1-D tensor replicated in both source files.
Case row_and_column_parallel(std::uint64_t rows, std::uint64_t cols, std::mt19937& rng) {
    Case c;
    const std::uint64_t es = 2, half = cols / 2, shard = rows * half * es;
    c.src.push_back(random_bytes(3 * shard + 100, rng));
    c.src.push_back(random_bytes(3 * shard + 100, rng));
    std::memcpy(c.src[1].data() + 3 * shard, c.src[0].data() + 3 * shard, 100);  // the replica
    const std::uint64_t header = 16, t0 = header, t1 = t0 + rows * cols * es, t2 = t1 + rows * cols * es;
    c.out_sizes = {t2 + 100};
    c.regions = {{0, t0, rows * cols * es, cols * es}, {0, t1, rows * cols * es, cols * es}, {0, t2, 100, es}};
    for (std::uint32_t r = 0; r < 2; ++r) {
        CopySpec dim1{r, 7, half * es, DType::BF16, 0, t0 + r * half * es, cols * es, DType::BF16, half, rows};
        dim1.src_offset = 0;
        c.copies.push_back(dim1);
        CopySpec dim0{r, shard, cols * es, DType::BF16, 0, t1 + r * (rows / 2) * cols * es, cols * es, DType::BF16,
                      cols, rows / 2};
        c.copies.push_back(dim0);
        CopySpec rep{r, 3 * shard, 100, DType::BF16, 0, t2, 100, DType::BF16, 50, 1};
        rep.verify_only = r > 0;
        c.copies.push_back(rep);
    }
    return c;
}

}  // namespace

TEST(TransferPlan, RoutesEveryByteForManyRankCountsAndBudgets) {
    std::mt19937 rng(7);
    for (auto readers : {Readers::writers, Readers::files})
        for (int ranks : {1, 2, 3, 4, 7}) {
            for (std::uint64_t round_bytes : {64ull, 100ull, 1000ull, 1ull << 20}) {
                auto c = row_and_column_parallel(16, 24, rng);
                PlanLimits limits{ranks, round_bytes, std::min<std::uint64_t>(round_bytes, 256), readers};
                const auto plan = plan_transfers(c.copies, c.regions, 2, limits);
                const auto expected = apply_directly(c.copies, c.src, c.out_sizes);
                const auto got = execute(plan, c.src, c.out_sizes, limits);
                // Everything but the (unwritten) header must match.
                EXPECT_TRUE(std::equal(expected[0].begin() + 16, expected[0].end(), got[0].begin() + 16))
                    << "ranks " << ranks << " round " << round_bytes;
                EXPECT_EQ(plan.total_bytes, c.out_sizes[0] - 16);
            }
        }
}

TEST(TransferPlan, WritersReadWhatTheyWriteAndFilesHaveOneReaderEach) {
    std::mt19937 rng(3);
    auto c = row_and_column_parallel(16, 24, rng);
    const auto by_writers = plan_transfers(c.copies, c.regions, 2, {3, 200, 100, Readers::writers});
    std::set<int> writers;
    for (const auto& p : by_writers.pieces) {
        EXPECT_EQ(p.reader, by_writers.windows[p.window].writer);
        writers.insert(p.reader);
    }
    EXPECT_EQ(writers.size(), 3u);
    const auto by_files = plan_transfers(c.copies, c.regions, 2, {2, 200, 100, Readers::files});
    std::map<std::uint32_t, std::set<int>> readers;
    bool crosses = false;
    for (const auto& p : by_files.pieces) {
        readers[p.src_file].insert(p.reader);
        crosses |= p.reader != by_files.windows[p.window].writer;
    }
    for (const auto& [f, rs] : readers) EXPECT_EQ(rs.size(), 1u) << "source file " << f;
    EXPECT_NE(*readers[0].begin(), *readers[1].begin());
    EXPECT_TRUE(crosses);  // some bytes go through the exchange
}

// Executes every rank's windows as the executor does when it streams: pieces outside the streamed ranges are
// assembled in the window, the ranges are assembled row by row from their pieces' source rows.
TEST(StreamedRanges, TheirWindowsStillComeOutRight) {
    std::mt19937 rng(11);
    for (auto readers : {Readers::writers, Readers::files})
        for (int ranks : {1, 2, 3})
            for (std::uint64_t round_bytes : {100ull, 1000ull, 1ull << 20}) {
                auto c = row_and_column_parallel(16, 24, rng);
                const auto plan = plan_transfers(c.copies, c.regions, 2, {ranks, round_bytes, round_bytes, readers});
                const auto expected = apply_directly(c.copies, c.src, c.out_sizes);
                Bytes out(c.out_sizes[0], std::byte{0});
                std::vector<bool> streamed(plan.pieces.size(), false);
                std::uint64_t streamed_bytes = 0;
                for (int rank = 0; rank < ranks; ++rank) {
                    const auto ranges = streamed_ranges(plan, rank, {false, false}, 0);
                    for (std::size_t k = 0; k < ranges.size(); ++k) {
                        const auto& r = ranges[k];
                        const auto& win = plan.windows[r.window];
                        EXPECT_EQ(win.writer, rank);
                        EXPECT_GE(r.offset, win.offset);
                        EXPECT_LE(r.offset + r.bytes, win.offset + win.size);
                        EXPECT_EQ(r.bytes, r.rows * r.pitch);
                        if (k && ranges[k - 1].window == r.window)
                            EXPECT_LE(ranges[k - 1].offset + ranges[k - 1].bytes, r.offset);
                        std::uint64_t side = 0;
                        for (auto i : r.pieces) {
                            const auto& p = plan.pieces[i];
                            EXPECT_EQ(p.reader, rank);
                            EXPECT_FALSE(p.verify_only);
                            EXPECT_EQ(p.dst_offset, r.offset + side);
                            side += r.rows == 1 ? p.dst_bytes() : p.dst_row_bytes();
                            streamed[i] = true;
                            for (std::uint64_t row = 0; row < r.rows; ++row)
                                std::memcpy(out.data() + r.offset + row * r.pitch + (p.dst_offset - r.offset),
                                            c.src[p.src_file].data() + p.src_offset + row * p.src_row_bytes() * (r.rows > 1),
                                            r.rows == 1 ? p.dst_bytes() : p.dst_row_bytes());
                        }
                        EXPECT_EQ(side, r.pitch);
                        streamed_bytes += r.bytes;
                    }
                }
                for (std::size_t i = 0; i < plan.pieces.size(); ++i) {
                    const auto& p = plan.pieces[i];
                    if (streamed[i] || p.verify_only) continue;
                    for (std::uint64_t row = 0; row < p.rows; ++row)
                        std::memcpy(out.data() + p.dst_offset + row * p.dst_pitch,
                                    c.src[p.src_file].data() + p.src_offset + row * p.src_pitch, p.dst_row_bytes());
                }
                EXPECT_TRUE(std::equal(expected[0].begin() + 16, expected[0].end(), out.begin() + 16))
                    << "ranks " << ranks << " round " << round_bytes;
                if (readers == Readers::writers && round_bytes == (1ull << 20)) EXPECT_GT(streamed_bytes, 0u);
            }
}

TEST(StreamedRanges, InterleaveDim1ShardsAndSkipReplicasCompressedSourcesAndSmallRanges) {
    std::mt19937 rng(5);
    auto c = row_and_column_parallel(16, 24, rng);  // rows of 24 bf16 = 48 bytes
    const auto plan = plan_transfers(c.copies, c.regions, 2, {1, 1 << 20, 1 << 20});
    ASSERT_EQ(plan.windows.size(), 1u);
    const auto all = streamed_ranges(plan, 0, {false, false}, 0);
    // The dim-1 tensor as one range of both shards, the dim-0 tensor as one range per shard; the replicated
    // tensor is compared, so it goes through the window.
    ASSERT_EQ(all.size(), 3u);
    EXPECT_EQ(all[0].offset, 16u);
    EXPECT_EQ(all[0].rows, 16u);
    EXPECT_EQ(all[0].pitch, 48u);
    EXPECT_EQ(all[0].pieces.size(), 2u);
    EXPECT_EQ(all[1].offset, 16u + 768);
    EXPECT_EQ(all[1].bytes, 384u);
    EXPECT_EQ(all[2].offset, 16u + 768 + 384);
    for (const auto& r : all) EXPECT_LT(r.offset, 16u + 2 * 768);
    // A compressed source file: its pieces are not streamed, and the other shard of the dim-1 split does not
    // fill a row alone.
    const auto plain = streamed_ranges(plan, 0, {true, false}, 0);
    ASSERT_EQ(plain.size(), 1u);
    EXPECT_EQ(plain[0].offset, 16u + 768 + 384);
    EXPECT_EQ(plan.pieces[plain[0].pieces[0]].src_file, 1u);
    const auto large = streamed_ranges(plan, 0, {false, false}, 500);
    ASSERT_EQ(large.size(), 1u);
    EXPECT_EQ(large[0].bytes, 768u);
    EXPECT_TRUE(streamed_ranges(plan, 1, {false, false}, 0).empty());  // rank 1 writes nothing
}

TEST(TransferPlan, WindowsTileTheOutputAndCutOnlyAtRows) {
    std::mt19937 rng(1);
    auto c = row_and_column_parallel(16, 24, rng);
    PlanLimits limits{3, 200, 100};
    const auto plan = plan_transfers(c.copies, c.regions, 2, limits);
    std::uint64_t at = 16;
    std::vector<const Window*> sorted;
    for (const auto& w : plan.windows) sorted.push_back(&w);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (const auto* w : sorted) {
        EXPECT_EQ(w->offset, at);
        at += w->size;
        // Inside the 2-D tensors, cuts fall on multiples of a row (24 bf16 = 48 bytes).
        if (w->offset < 16 + 2 * 16 * 48) EXPECT_EQ((w->offset - 16) % 48, 0u);
    }
    EXPECT_EQ(at, c.out_sizes[0]);
}

TEST(TransferPlan, OneWriterPerFileWhenThereAreEnoughFiles) {
    std::vector<Bytes> src{Bytes(400)};
    std::vector<CopySpec> copies;
    std::vector<OutputRegion> regions;
    for (std::uint32_t f = 0; f < 4; ++f) {
        copies.push_back({0, f * 100ull, 0, DType::F32, f, 8, 0, DType::F32, 25, 1});
        regions.push_back({f, 8, 100, 4});
    }
    const auto plan = plan_transfers(copies, regions, 1, {2, 40, 40});
    std::map<std::uint32_t, std::set<int>> writers;
    for (const auto& w : plan.windows) writers[w.file].insert(w.writer);
    for (const auto& [f, ws] : writers) EXPECT_EQ(ws.size(), 1u) << "file " << f;
    std::set<int> all;
    for (const auto& [f, ws] : writers) all.insert(*ws.begin());
    EXPECT_EQ(all.size(), 2u);  // both ranks write
}

TEST(TransferPlan, ReadersBalanceBytes) {
    std::vector<CopySpec> copies;
    std::vector<OutputRegion> regions{{0, 0, 4000, 4}};
    copies.push_back({0, 0, 0, DType::F32, 0, 0, 0, DType::F32, 1000, 1});
    const auto plan = plan_transfers(copies, regions, 1, {4, 1 << 20, 256, Readers::files});
    std::map<int, std::uint64_t> read;
    for (const auto& p : plan.pieces) read[p.reader] += p.dst_bytes();
    ASSERT_EQ(read.size(), 4u);
    for (const auto& [r, b] : read) EXPECT_NEAR(static_cast<double>(b), 1000.0, 256.0);
}

TEST(TransferPlan, RejectsCopiesOutsideTheOutputAndBadLimits) {
    std::vector<CopySpec> copies{{0, 0, 0, DType::F32, 0, 100, 0, DType::F32, 4, 1}};
    std::vector<OutputRegion> regions{{0, 0, 16, 4}};
    EXPECT_THROW(plan_transfers(copies, regions, 1, {1, 1024, 1024}), Error);
    EXPECT_THROW(plan_transfers({}, regions, 1, {0, 1024, 1024}), Error);
    EXPECT_THROW(plan_transfers({}, regions, 1, {1, 1ull << 32, 1024}), Error);
}
