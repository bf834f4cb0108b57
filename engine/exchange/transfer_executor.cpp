#include "exchange/transfer_executor.hpp"

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <exception>
#include <memory>
#include <thread>
#include <utility>

#include "common/error.hpp"
#include "common/fault_injection.hpp"
#include "exchange/source_reader.hpp"
#include "io/dtype_cast.hpp"

namespace m2h::exchange {
namespace {

using plan::Piece;
using plan::TransferPlan;

constexpr std::uint64_t kBlockBytes = 4u << 20;  // source bytes per read when rows are copied one by one or cast
// Bytes per read and write of a streamed piece: small enough to stay in L2, so the bytes cross memory once (page
// cache -> cache -> page cache). Through a 64 MiB window they cross it three times; on the benchmark machine a
// 2 GB file copy took 0.73-0.80 s through 128-256 KiB buffers against 1.0-1.6 s through 64 MiB ones.
constexpr std::uint64_t kStreamBytes = 256u << 10;

// A piece its window's writer reads itself is read straight into the window: it skips the send buffer, the
// Alltoallv and the placing copy. Replicas to verify still travel, to be compared with what was placed.
bool local(const Piece& p, const plan::Window& w) { return p.reader == w.writer && !p.verify_only; }

constexpr std::uint64_t kMinStreamed = 64u << 10;  // smaller pieces cost less through the window than a write each

// A piece its writer reads itself, unchanged (no cast, no replica to compare), contiguous at both ends and not
// small needs no window buffer: the writer thread streams it from its source file to the sink, and the rest of
// its window is written around it.
std::vector<bool> streamed_pieces(const TransferPlan& plan, const std::vector<plan::SourceFile>& sources, bool sink_streams) {
    std::vector<bool> out(plan.pieces.size(), false);
    if (!sink_streams) return out;
    for (const auto& win : plan.windows)
        for (auto i = win.first_piece; i < win.first_piece + win.piece_count; ++i) {
            const auto& p = plan.pieces[i];
            out[i] = local(p, win) && p.src_dtype == p.dst_dtype && p.src_contiguous() && p.dst_contiguous() &&
                     p.dst_bytes() >= kMinStreamed && !sources.at(p.src_file).zstd;
        }
    return out;
}

struct RoundLayout {
    std::vector<int> send_counts, send_displs, recv_counts, recv_displs;
    std::uint64_t send_total = 0, recv_total = 0, window_total = 0;
    std::vector<std::uint64_t> window_at;  // per window of the round: where it starts in this rank's buffer
};

RoundLayout layout_round(const TransferPlan& plan, const plan::Round& round, int me, int ranks) {
    RoundLayout l;
    std::vector<std::uint64_t> send(static_cast<std::size_t>(ranks), 0), recv(static_cast<std::size_t>(ranks), 0);
    for (auto w = round.first_window; w < round.first_window + round.window_count; ++w) {
        const auto& win = plan.windows[w];
        l.window_at.push_back(l.window_total);
        if (win.writer == me) l.window_total += win.size;
        for (auto i = win.first_piece; i < win.first_piece + win.piece_count; ++i) {
            const auto& p = plan.pieces[i];
            if (local(p, win)) continue;
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
        : comm_(comm), plan_(plan), sources_(sources, cache_bytes), streamed_(sources, 0), sink_(sink),
          describe_(describe), streamed_pieces_(streamed_pieces(plan, sources, sink.concurrent())) {}

    ~Executor() {
        if (writing_.joinable()) writing_.join();  // after a failure elsewhere: its own error no longer matters
    }

    TransferStats run(const RoundDone& round_done) {
        std::uint64_t done = 0;
        for (std::size_t r = 0; r < plan_.rounds.size(); ++r) {
            const auto& round = plan_.rounds[r];
            const auto l = layout_round(plan_, round, comm_.rank(), comm_.size());
            auto& buffer = buffers_[r % 2];
            grow(send_, l.send_total);
            grow(recv_, l.recv_total);
            grow(buffer.window, l.window_total);
            collective(comm_, [&] { pack(round, l, buffer.window); });
            comm_.all_to_all(send_, l.send_counts, l.send_displs, recv_, l.recv_counts, l.recv_displs);
            collective(comm_, [&] { place(round, l, buffer); });
            // Apart from placing, so that a rank failing there never leaves a collective sink waiting.
            if (sink_.concurrent()) {
                // Round r is written while round r + 1 is read into the other buffer; round r - 1 must be on
                // disk first (one round at a time, in order), and its failure stops every rank here.
                collective(comm_, [&] { finish_write(); });
                writing_ = std::thread([this, r, &buffer] {
                    try {
                        sink_.write_round(r, buffer.placed);
                        stream(r, buffer.streamed);
                    } catch (...) {
                        write_error_ = std::current_exception();
                    }
                });
            } else {
                collective(comm_, [&] { sink_.write_round(r, buffer.placed); });
            }
            done += round.bytes;
            round_done(r, done);
        }
        collective(comm_, [&] { finish_write(); });
        stats_.bytes_read += streamed_bytes_;
        return stats_;
    }

private:
    struct Buffer {
        std::vector<std::byte> window;
        std::vector<io::WindowBytes> placed;  // the round's windows of this rank, assembled, or their stretches
        std::deque<plan::Window> stretches;   // around streamed pieces (a deque: `placed` points into it)
        std::vector<std::uint32_t> streamed;  // pieces the writer thread streams
    };

    static void grow(std::vector<std::byte>& buffer, std::uint64_t n) {
        if (buffer.size() < n) buffer.resize(n);
    }

    // Waits for the write in flight, if any, and rethrows its failure.
    void finish_write() {
        if (writing_.joinable()) writing_.join();
        if (auto e = std::exchange(write_error_, nullptr)) std::rethrow_exception(e);
    }

    void pack(const plan::Round& round, const RoundLayout& l, std::vector<std::byte>& window) {
        fault_point(comm_.rank(), "move");
        std::vector<std::uint64_t> cursor(l.send_displs.begin(), l.send_displs.end());
        for (auto w = round.first_window; w < round.first_window + round.window_count; ++w) {
            const auto& win = plan_.windows[w];
            for (auto i = win.first_piece; i < win.first_piece + win.piece_count; ++i) {
                const auto& p = plan_.pieces[i];
                if (p.reader != comm_.rank() || streamed_pieces_[i]) continue;
                if (local(p, win)) {
                    const auto at = l.window_at[w - round.first_window] + (p.dst_offset - win.offset);
                    const auto span = (p.rows - 1) * p.dst_pitch + p.dst_row_bytes();
                    read_piece(p, std::span(window).subspan(at, span), p.dst_pitch);
                    continue;
                }
                auto& at = cursor[static_cast<std::size_t>(win.writer)];
                read_piece(p, std::span(send_).subspan(at, p.dst_bytes()), p.dst_row_bytes());
                at += p.dst_bytes();
            }
        }
    }

    // Reads a piece's source rows and stores them as output bytes (cast at the reader), row r at r * out_pitch.
    void read_piece(const Piece& p, std::span<std::byte> out, std::uint64_t out_pitch) {
        const std::uint64_t src_row = p.src_row_bytes(), dst_row = p.dst_row_bytes();
        const bool same = p.src_dtype == p.dst_dtype;
        stats_.bytes_read += p.rows * src_row;
        if (same && p.src_contiguous() && (p.rows == 1 || out_pitch == dst_row)) {
            sources_.read_at(p.src_file, p.src_offset, out.first(p.rows * dst_row));  // one read, in place
            return;
        }
        const auto store = [&](std::span<const std::byte> in, std::span<std::byte> to) {
            if (same)
                std::memcpy(to.data(), in.data(), in.size());
            else
                io::cast(p.src_dtype, p.dst_dtype, in, to);
        };
        if (p.src_contiguous() && src_row <= kBlockBytes) {
            // Rows that land apart (a TP shard of a dim-1 split) or need a cast: whole rows per read of about
            // kBlockBytes, then copied or cast into place; a read per row would cost a syscall per few KB.
            const std::uint64_t per_read = kBlockBytes / src_row;
            grow(scratch_, std::min(p.rows, per_read) * src_row);
            for (std::uint64_t r = 0; r < p.rows; r += per_read) {
                const std::uint64_t n = std::min(per_read, p.rows - r);
                auto in = std::span(scratch_).first(n * src_row);
                sources_.read_at(p.src_file, p.src_offset + r * src_row, in);
                for (std::uint64_t k = 0; k < n; ++k)
                    store(in.subspan(k * src_row, src_row), out.subspan((r + k) * out_pitch, dst_row));
            }
            return;
        }
        // Rows apart in the source, or longer than a block: row by row, at most a block per read.
        const std::uint64_t ses = dtype_size(p.src_dtype), des = dtype_size(p.dst_dtype);
        const std::uint64_t per_read = std::max<std::uint64_t>(1, kBlockBytes / ses);
        if (!same) grow(scratch_, std::min(p.cols, per_read) * ses);
        for (std::uint64_t r = 0; r < p.rows; ++r) {
            for (std::uint64_t c = 0; c < p.cols; c += per_read) {
                const std::uint64_t n = std::min(per_read, p.cols - c);
                auto to = out.subspan(r * out_pitch + c * des, n * des);
                const auto at = p.src_offset + r * p.src_pitch + c * ses;
                if (same) {
                    sources_.read_at(p.src_file, at, to);
                } else {
                    auto in = std::span(scratch_).first(n * ses);
                    sources_.read_at(p.src_file, at, in);
                    store(in, to);
                }
            }
        }
    }

    void place(const plan::Round& round, const RoundLayout& l, Buffer& out) {
        out.placed.clear();
        out.stretches.clear();
        out.streamed.clear();
        std::vector<std::uint64_t> cursor(l.recv_displs.begin(), l.recv_displs.end());
        for (auto w = round.first_window; w < round.first_window + round.window_count; ++w) {
            const auto& win = plan_.windows[w];
            if (win.writer != comm_.rank()) continue;
            auto buffer = std::span(out.window).subspan(l.window_at[w - round.first_window], win.size);
            for (auto i = win.first_piece; i < win.first_piece + win.piece_count; ++i) {
                const auto& p = plan_.pieces[i];
                if (local(p, win)) continue;  // read into place by pack(), or streamed
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
            add_window(out, w, buffer);
            stats_.bytes_written += win.size;
        }
    }

    // Hands window w to the sink whole or, around its streamed pieces, as the stretches between them.
    void add_window(Buffer& out, std::uint32_t w, std::span<const std::byte> bytes) {
        const auto& win = plan_.windows[w];
        std::vector<const Piece*> holes;
        for (auto i = win.first_piece; i < win.first_piece + win.piece_count; ++i)
            if (streamed_pieces_[i]) {
                holes.push_back(&plan_.pieces[i]);
                out.streamed.push_back(i);
            }
        if (holes.empty()) {
            out.placed.push_back({w, &win, bytes});
            return;
        }
        std::sort(holes.begin(), holes.end(), [](auto* a, auto* b) { return a->dst_offset < b->dst_offset; });
        std::uint64_t at = win.offset;
        const auto stretch = [&](std::uint64_t end) {
            if (end <= at) return;
            out.stretches.push_back({win.file, at, end - at, win.writer, 0, 0});
            out.placed.push_back({w, &out.stretches.back(), bytes.subspan(at - win.offset, end - at)});
        };
        for (const auto* p : holes) {
            stretch(p->dst_offset);
            at = p->dst_offset + p->dst_bytes();
        }
        stretch(win.offset + win.size);
    }

    // On the writer thread: streamed pieces, from source file to sink through a buffer that stays in cache. The
    // sink gets each part as a window of its own (a concurrent sink accepts stretches).
    void stream(std::size_t round, const std::vector<std::uint32_t>& pieces) {
        grow(bounce_, kStreamBytes);
        for (const auto i : pieces) {
            const auto& p = plan_.pieces[i];
            const auto& win = plan_.windows[p.window];
            const std::uint64_t bytes = p.dst_bytes();
            for (std::uint64_t at = 0; at < bytes; at += kStreamBytes) {
                const auto part = std::span(bounce_).first(std::min(kStreamBytes, bytes - at));
                streamed_.read_at(p.src_file, p.src_offset + at, part);
                const plan::Window stretch{win.file, p.dst_offset + at, part.size(), win.writer, 0, 0};
                const io::WindowBytes one{p.window, &stretch, part};
                sink_.write_round(round, std::span(&one, 1));
                streamed_bytes_ += part.size();
            }
        }
    }

    const Comm& comm_;
    const TransferPlan& plan_;
    SourceReader sources_;
    SourceReader streamed_;  // the writer thread's own files
    io::OutputSink& sink_;
    const DescribeCopy& describe_;
    const std::vector<bool> streamed_pieces_;  // per piece of the plan
    std::vector<std::byte> send_, recv_, scratch_, bounce_;
    std::uint64_t streamed_bytes_ = 0;  // read by the writer thread
    Buffer buffers_[2];  // rounds alternate: one is assembled while the other is written
    std::thread writing_;
    std::exception_ptr write_error_;
    TransferStats stats_;
};

}  // namespace

TransferStats execute_transfers(const Comm& comm, const TransferPlan& plan, const std::vector<plan::SourceFile>& sources,
                                io::OutputSink& sink, const DescribeCopy& describe, const RoundDone& round_done,
                                std::uint64_t cache_bytes) {
    return Executor(comm, plan, sources, sink, describe, cache_bytes).run(round_done);
}

}  // namespace m2h::exchange
