#include "plan/streamed_ranges.hpp"

#include <algorithm>

namespace m2h::plan {
namespace {

std::uint64_t extent_end(const Piece& p) { return p.dst_offset + (p.rows - 1) * p.dst_pitch + p.dst_row_bytes(); }

}  // namespace

std::vector<StreamedRange> streamed_ranges(const TransferPlan& plan, int rank, const std::vector<bool>& compressed,
                                           std::uint64_t min_bytes) {
    std::vector<StreamedRange> out;
    for (std::uint32_t w = 0; w < plan.windows.size(); ++w) {
        const auto& win = plan.windows[w];
        if (win.writer != rank) continue;
        std::vector<std::uint32_t> candidates;
        std::vector<const Piece*> replicas;
        for (auto i = win.first_piece; i < win.first_piece + win.piece_count; ++i) {
            const auto& p = plan.pieces[i];
            if (p.verify_only)
                replicas.push_back(&p);
            else if (p.reader == rank && p.src_contiguous() && !compressed.at(p.src_file))
                candidates.push_back(i);
        }
        std::sort(candidates.begin(), candidates.end(),
                  [&](auto a, auto b) { return plan.pieces[a].dst_offset < plan.pieces[b].dst_offset; });
        const auto keep = [&](StreamedRange r) {
            const bool compared = std::any_of(replicas.begin(), replicas.end(), [&](const Piece* v) {
                return v->dst_offset < r.offset + r.bytes && r.offset < extent_end(*v);
            });
            if (r.bytes >= min_bytes && !compared) out.push_back(std::move(r));
        };
        for (std::size_t k = 0; k < candidates.size();) {
            const auto& first = plan.pieces[candidates[k]];
            if (first.rows == 1) {
                keep({w, first.dst_offset, first.dst_bytes(), 1, first.dst_bytes(), {candidates[k]}});
                ++k;
                continue;
            }
            if (first.dst_contiguous()) {  // several rows contiguous at both ends: clip() makes them one row
                ++k;
                continue;
            }
            // Strided pieces: take the ones that continue this row side by side until they fill the pitch.
            StreamedRange r{w, first.dst_offset, first.rows * first.dst_pitch, first.rows, first.dst_pitch, {}};
            std::uint64_t filled = 0;
            while (k < candidates.size() && filled < r.pitch) {
                const auto& p = plan.pieces[candidates[k]];
                if (p.rows != r.rows || p.dst_pitch != r.pitch || p.dst_contiguous() ||
                    p.dst_offset != r.offset + filled)
                    break;
                r.pieces.push_back(candidates[k]);
                filled += p.dst_row_bytes();
                ++k;
            }
            if (filled == r.pitch) keep(std::move(r));  // else they go through the window
        }
    }
    return out;
}

}  // namespace m2h::plan
