#include "exchange/transfer_executor.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>

#include "common/error.hpp"
#include "common/fault_injection.hpp"
#include "exchange/source_reader.hpp"
#include "io/dtype_cast.hpp"

namespace m2h::exchange {
namespace {

using plan::Piece;
using plan::TransferPlan;

constexpr std::uint64_t kCastChunk = 1u << 20;  // elements converted per read when casting

struct RoundLayout {
    std::vector<int> send_counts, send_displs, recv_counts, recv_displs;
    std::uint64_t send_total = 0, recv_total = 0, window_total = 0;
};

RoundLayout layout_round(const TransferPlan& plan, const plan::Round& round, int me, int ranks) {
    RoundLayout l;
    std::vector<std::uint64_t> send(static_cast<std::size_t>(ranks), 0), recv(static_cast<std::size_t>(ranks), 0);
    for (auto w = round.first_window; w < round.first_window + round.window_count; ++w) {
        const auto& win = plan.windows[w];
        if (win.writer == me) l.window_total += win.size;
        for (auto i = win.first_piece; i < win.first_piece + win.piece_count; ++i) {
            const auto& p = plan.pieces[i];
            if (p.reader == me) send[static_cast<std::size_t>(win.writer)] += p.dst_bytes();
            if (win.writer == me) recv[static_cast<std::size_t>(p.reader)] += p.dst_bytes();
        }
    }
    for (int r = 0; r < ranks; ++r) {
        const auto i = static_cast<std::size_t>(r);
        l.send_counts.push_back(static_cast<int>(send[i]));
        l.send_displs.push_back(static_cast<int>(l.send_total));
        l.recv_counts.push_back(static_cast<int>(recv[i]));
        l.recv_displs.push_back(static_cast<int>(l.recv_total));
        l.send_total += send[i];
        l.recv_total += recv[i];
    }
    return l;
}

class Executor {
public:
    Executor(const Comm& comm, const TransferPlan& plan, const std::vector<plan::SourceFile>& sources,
             io::OutputSink& sink, const DescribeCopy& describe, std::uint64_t cache_bytes)
        : comm_(comm), plan_(plan), sources_(sources, cache_bytes), sink_(sink), describe_(describe) {}

    TransferStats run(const RoundDone& round_done) {
        std::uint64_t done = 0;
        for (std::size_t r = 0; r < plan_.rounds.size(); ++r) {
            const auto& round = plan_.rounds[r];
            const auto l = layout_round(plan_, round, comm_.rank(), comm_.size());
            grow(send_, l.send_total);
            grow(recv_, l.recv_total);
            grow(window_, l.window_total);
            collective(comm_, [&] { pack(round, l); });
            comm_.all_to_all(send_, l.send_counts, l.send_displs, recv_, l.recv_counts, l.recv_displs);
            collective(comm_, [&] { place(round, l); });
            // Apart from placing, so that a rank failing there never leaves a collective sink waiting.
            collective(comm_, [&] { sink_.write_round(r, placed_); });
            done += round.bytes;
            round_done(r, done);
        }
        return stats_;
    }

private:
    static void grow(std::vector<std::byte>& buffer, std::uint64_t n) {
        if (buffer.size() < n) buffer.resize(n);
    }

    void pack(const plan::Round& round, const RoundLayout& l) {
        fault_point(comm_.rank(), "move");
        std::vector<std::uint64_t> cursor(l.send_displs.begin(), l.send_displs.end());
        for (auto w = round.first_window; w < round.first_window + round.window_count; ++w) {
            const auto& win = plan_.windows[w];
            for (auto i = win.first_piece; i < win.first_piece + win.piece_count; ++i) {
                const auto& p = plan_.pieces[i];
                if (p.reader != comm_.rank()) continue;
                auto& at = cursor[static_cast<std::size_t>(win.writer)];
                read_piece(p, std::span(send_).subspan(at, p.dst_bytes()));
                at += p.dst_bytes();
            }
        }
    }

    // Reads a piece's source rows and stores them as output bytes (cast at the sender).
    void read_piece(const Piece& p, std::span<std::byte> out) {
        const std::uint64_t src_row = p.src_row_bytes(), dst_row = p.dst_row_bytes();
        if (p.src_dtype == p.dst_dtype) {
            if (p.src_contiguous()) {
                sources_.read_at(p.src_file, p.src_offset, out);
            } else {
                for (std::uint64_t r = 0; r < p.rows; ++r)
                    sources_.read_at(p.src_file, p.src_offset + r * p.src_pitch, out.subspan(r * dst_row, dst_row));
            }
            stats_.bytes_read += p.rows * src_row;
            return;
        }
        const std::uint64_t ses = dtype_size(p.src_dtype), des = dtype_size(p.dst_dtype);
        grow(scratch_, std::min(p.cols, kCastChunk) * ses);
        for (std::uint64_t r = 0; r < p.rows; ++r) {
            for (std::uint64_t c = 0; c < p.cols; c += kCastChunk) {
                const std::uint64_t n = std::min(kCastChunk, p.cols - c);
                auto in = std::span(scratch_).first(n * ses);
                sources_.read_at(p.src_file, p.src_offset + r * p.src_pitch + c * ses, in);
                io::cast(p.src_dtype, p.dst_dtype, in, out.subspan(r * dst_row + c * des, n * des));
            }
        }
        stats_.bytes_read += p.rows * src_row;
    }

    void place(const plan::Round& round, const RoundLayout& l) {
        placed_.clear();
        std::vector<std::uint64_t> cursor(l.recv_displs.begin(), l.recv_displs.end());
        std::uint64_t window_at = 0;
        for (auto w = round.first_window; w < round.first_window + round.window_count; ++w) {
            const auto& win = plan_.windows[w];
            if (win.writer != comm_.rank()) continue;
            auto buffer = std::span(window_).subspan(window_at, win.size);
            window_at += win.size;
            for (auto i = win.first_piece; i < win.first_piece + win.piece_count; ++i) {
                const auto& p = plan_.pieces[i];
                auto& at = cursor[static_cast<std::size_t>(p.reader)];
                const std::uint64_t row = p.dst_row_bytes();
                for (std::uint64_t r = 0; r < p.rows; ++r) {
                    const auto* from = recv_.data() + at + r * row;
                    auto* to = buffer.data() + (p.dst_offset - win.offset) + r * p.dst_pitch;
                    if (!p.verify_only)
                        std::memcpy(to, from, row);
                    else if (std::memcmp(to, from, row) != 0)
                        throw Error(describe_(p.tag), "replicated tensor differs between TP ranks");
                }
                at += p.dst_bytes();
            }
            placed_.push_back({w, &win, buffer});
            stats_.bytes_written += win.size;
        }
    }

    const Comm& comm_;
    const TransferPlan& plan_;
    SourceReader sources_;
    io::OutputSink& sink_;
    const DescribeCopy& describe_;
    std::vector<std::byte> send_, recv_, window_, scratch_;
    std::vector<io::WindowBytes> placed_;  // this round's windows of this rank, assembled
    TransferStats stats_;
};

}  // namespace

TransferStats execute_transfers(const Comm& comm, const TransferPlan& plan, const std::vector<plan::SourceFile>& sources,
                                io::OutputSink& sink, const DescribeCopy& describe, const RoundDone& round_done,
                                std::uint64_t cache_bytes) {
    return Executor(comm, plan, sources, sink, describe, cache_bytes).run(round_done);
}

}  // namespace m2h::exchange
