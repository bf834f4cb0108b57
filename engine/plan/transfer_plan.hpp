#pragma once
// Pure: who reads which source bytes, who writes which output bytes, and in which bounded round.
//
// Output files are cut into windows (contiguous byte ranges cut at tensor-row boundaries); each window has one
// writer rank and is completed within one round. Copies are clipped to windows into pieces; each piece has
// one reader rank, which reads it, casts it to the output dtype, and sends it to the window's writer with
// MPI_Alltoallv unless it is that writer. Rounds are packed so that no rank sends or receives more than
// `round_bytes` in one, so every Alltoallv count and displacement fits in an int by construction.
#include <cstdint>
#include <vector>

#include "common/dtype.hpp"

namespace m2h::plan {

// A 2-D block copy in bytes at absolute file offsets: `rows` rows of `cols` elements.
struct CopySpec {
    std::uint32_t src_file = 0;
    std::uint64_t src_offset = 0;
    std::uint64_t src_pitch = 0;  // bytes between source rows
    DType src_dtype = DType::F32;
    std::uint32_t dst_file = 0;
    std::uint64_t dst_offset = 0;
    std::uint64_t dst_pitch = 0;  // bytes between output rows
    DType dst_dtype = DType::F32;
    std::uint64_t cols = 0;
    std::uint64_t rows = 0;
    bool verify_only = false;     // compare with the bytes already placed instead of writing
    std::uint32_t tag = 0;        // caller's id (the tensor copy), for error messages

    std::uint64_t src_row_bytes() const { return cols * dtype_size(src_dtype); }
    std::uint64_t dst_row_bytes() const { return cols * dtype_size(dst_dtype); }
    std::uint64_t dst_bytes() const { return rows * dst_row_bytes(); }
    bool dst_contiguous() const { return rows == 1 || dst_pitch == dst_row_bytes(); }
    bool src_contiguous() const { return rows == 1 || src_pitch == src_row_bytes(); }
};

// A tensor's bytes in an output file; windows may cut it only at multiples of `unit` (its row size).
struct OutputRegion {
    std::uint32_t file = 0;
    std::uint64_t offset = 0;
    std::uint64_t nbytes = 0;
    std::uint64_t unit = 1;
};

struct Piece : CopySpec {
    int reader = 0;
    std::uint32_t window = 0;
};

struct Window {
    std::uint32_t file = 0;
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
    int writer = 0;
    std::uint32_t first_piece = 0;  // pieces of a window are consecutive; replicas to verify come last
    std::uint32_t piece_count = 0;
};

struct Round {
    std::uint32_t first_window = 0;  // windows of a round are consecutive
    std::uint32_t window_count = 0;
    std::uint64_t bytes = 0;         // output bytes completed by this round
};

// Who reads a piece. `writers`: the rank that writes it, so only replicas to compare cross MPI; every rank
// reads the parts of many source files that its output needs. `files`: whole source files per rank (or
// contiguous stretches of them when there are fewer files than ranks), and the exchange carries the bytes
// to their writers; one reader per source file, for filesystems that prefer that.
enum class Readers { writers, files };

struct PlanLimits {
    int ranks = 1;
    std::uint64_t round_bytes = 1u << 28;  // per rank and round, sent and received; at most INT_MAX
    std::uint64_t window_bytes = 1u << 26;  // largest window (one positioned write)
    Readers readers = Readers::writers;
};

struct TransferPlan {
    std::vector<Piece> pieces;
    std::vector<Window> windows;
    std::vector<Round> rounds;
    std::uint64_t total_bytes = 0;  // output data bytes (= sum of window sizes)
};

// `regions` must tile what the copies write (every output byte written exactly once by a non-verify copy);
// `source_files` is the number of source files (for reader balancing).
TransferPlan plan_transfers(const std::vector<CopySpec>& copies, const std::vector<OutputRegion>& regions,
                            std::uint32_t source_files, const PlanLimits& limits);

}  // namespace m2h::plan
