#pragma once
// Pure: which parts of a rank's windows its writer thread copies from the source files to the output through a
// small buffer, instead of assembling them in the window first (exchange/transfer_executor.cpp). Through a
// buffer that stays in cache the bytes cross memory once; through a 64 MiB window, three times.
#include <cstdint>
#include <vector>

#include "plan/transfer_plan.hpp"

namespace m2h::plan {

// A contiguous output range of one window, made of one piece contiguous at both ends, or of pieces whose rows
// interleave (the TP shards of a dim-1 split: row r of the range is row r of each piece, side by side).
struct StreamedRange {
    std::uint32_t window = 0;
    std::uint64_t offset = 0;  // in the output file
    std::uint64_t bytes = 0;
    std::uint64_t rows = 1;    // rows of `pitch` bytes; one piece contiguous at both ends counts as one row
    std::uint64_t pitch = 0;
    std::vector<std::uint32_t> pieces;  // plan piece indices, by output offset
};

// The ranges of `rank`'s windows that it reads entirely itself from uncompressed, contiguous source bytes
// (`compressed`: per source file), at least `min_bytes` long, and that no replica to compare overlaps. Sorted by
// window, then offset.
std::vector<StreamedRange> streamed_ranges(const TransferPlan& plan, int rank, const std::vector<bool>& compressed,
                                           std::uint64_t min_bytes);

}  // namespace m2h::plan
