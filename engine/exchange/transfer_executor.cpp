#include "exchange/transfer_executor.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "common/error.hpp"
#include "common/fault_injection.hpp"
#include "exchange/read_pacer.hpp"
#include "exchange/source_reader.hpp"
#include "io/dtype_cast.hpp"
#include "plan/streamed_ranges.hpp"

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

constexpr std::uint64_t kMinStreamed = 64u << 10;  // smaller ranges cost less through the window than a write each
// The round number streamed parts are written under: they belong to no round (a concurrent sink ignores it).
constexpr std::size_t kStreamedRound = static_cast<std::size_t>(-1);

// A growable buffer of uninitialised bytes: growing costs no memset, and the pages a round never touches (its
// windows' streamed ranges) are never faulted in.
class RawBuffer {
public:
    void grow(std::uint64_t n) {
        if (n <= size_) return;
        data_ = std::make_unique_for_overwrite<std::byte[]>(n);
        size_ = n;
    }
    std::span<std::byte> span() { return {data_.get(), size_}; }

private:
    std::unique_ptr<std::byte[]> data_;
    std::uint64_t size_ = 0;
};

// Reads `rows` consecutive source rows of `cols` elements of `p`'s source file from `at` and stores them as output
// bytes (cast if asked), row i at i * pitch of `out`: straight into `out` when they need no change, else through
// `scratch`.
void read_rows(SourceReader& reader, RawBuffer& scratch, const Piece& p, std::uint64_t at, std::uint64_t rows,
               std::uint64_t cols, std::uint64_t pitch, std::span<std::byte> out) {
    const std::uint64_t src_row = cols * dtype_size(p.src_dtype), dst_row = cols * dtype_size(p.dst_dtype);
    if (p.src_dtype == p.dst_dtype && (rows == 1 || pitch == dst_row)) {
        reader.read_at(p.src_file, at, out.first(rows * dst_row));
        return;
    }
    scratch.grow(rows * src_row);
    const auto in = scratch.span().first(rows * src_row);
    reader.read_at(p.src_file, at, in);
    for (std::uint64_t i = 0; i < rows; ++i)
        io::cast(p.src_dtype, p.dst_dtype, in.subspan(i * src_row, src_row), out.subspan(i * pitch, dst_row));
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
    Executor(const Comm& comm, const TransferPlan& plan, const std::vector<tensors::SourceFile>& sources,
             io::OutputSink& sink, const DescribeCopy& describe, const ReadLimits& limits)
        : comm_(comm), plan_(plan), pacer_(limits.max_read_rate), sources_(sources, limits.cache_bytes, &pacer_),
          streamed_(sources, 0, &pacer_), sink_(sink),
          describe_(describe), streamed_pieces_(plan.pieces.size(), false), window_ranges_(plan.windows.size() + 1, 0) {
        if (sink.concurrent()) {
            std::vector<bool> compressed;
            for (const auto& f : sources) compressed.push_back(f.zstd);
            ranges_ = plan::streamed_ranges(plan, comm.rank(), compressed, kMinStreamed);
        }
        // ranges_ is sorted by window: window w's ranges are [window_ranges_[w], window_ranges_[w + 1]).
        for (const auto& r : ranges_) {
            ++window_ranges_[r.window + 1];
            for (const auto i : r.pieces) streamed_pieces_[i] = true;
        }
        for (std::size_t w = 0; w < plan.windows.size(); ++w) window_ranges_[w + 1] += window_ranges_[w];
    }

    ~Executor() {
        // After a failure elsewhere: the threads' own errors no longer matter.
        stop_ = true;
        if (streaming_.joinable()) streaming_.join();
        if (writing_.joinable()) writing_.join();
    }

    TransferStats run(const RoundDone& round_done) {
        // Streamed ranges need nothing from the rounds: one thread streams them all, in round order, and runs
        // ahead of the rounds as far as it can, so a rank is never held at a round boundary for another rank's
        // streaming, only for its own (below) when it falls behind.
        if (!ranges_.empty()) streaming_ = std::thread([this] { stream_all(); });
        std::uint64_t done = 0;
        for (std::size_t r = 0; r < plan_.rounds.size(); ++r) {
            const auto& round = plan_.rounds[r];
            const auto l = layout_round(plan_, round, comm_.rank(), comm_.size());
            auto& buffer = buffers_[r % 2];
            send_.grow(l.send_total);
            recv_.grow(l.recv_total);
            buffer.window.grow(l.window_total);
            collective(comm_, [&] { pack(round, l, buffer.window); });
            comm_.all_to_all(send_.span(), l.send_counts, l.send_displs, recv_.span(), l.recv_counts, l.recv_displs);
            stats_.bytes_sent += l.send_total - static_cast<std::uint64_t>(l.send_counts[static_cast<std::size_t>(comm_.rank())]);
            collective(comm_, [&] { place(round, l, buffer); });
            // Apart from placing, so that a rank failing there never leaves a collective sink waiting.
            if (sink_.concurrent()) {
                // Round r is written while round r + 1 is read into the other buffer; round r - 1 must be on
                // disk first (one round at a time, in order), and its failure stops every rank here.
                // Streaming may lag one round behind, so that progress counts what is on disk.
                collective(comm_, [&] {
                    finish_write();
                    if (r > 0) wait_streamed(plan_.rounds[r - 1]);
                });
                writing_ = std::thread([this, r, &buffer] {
                    try {
                        sink_.write_round(r, buffer.placed);
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
        collective(comm_, [&] {
            finish_write();
            if (!plan_.rounds.empty()) wait_streamed(plan_.rounds.back());
            if (streaming_.joinable()) streaming_.join();
        });
        stats_.bytes_read += streamed_bytes_;
        stats_.bytes_streamed = streamed_bytes_;
        return stats_;
    }

private:
    struct Buffer {
        RawBuffer window;
        std::vector<io::WindowBytes> placed;  // the round's windows of this rank, assembled, or their stretches
        std::deque<plan::Window> stretches;   // around streamed ranges (a deque: `placed` points into it)
    };

    // Waits for the write in flight, if any, and rethrows its failure.
    void finish_write() {
        if (writing_.joinable()) writing_.join();
        if (auto e = std::exchange(write_error_, nullptr)) std::rethrow_exception(e);
    }

    // Waits until the ranges of every window up to the end of `round` are streamed; rethrows the streaming
    // thread's failure.
    void wait_streamed(const plan::Round& round) {
        const auto need = window_ranges_[round.first_window + round.window_count];
        std::unique_lock lock(progress_);
        streamed_more_.wait(lock, [&] { return ranges_done_ >= need || stream_error_; });
        if (stream_error_) std::rethrow_exception(stream_error_);
    }

    // The streaming thread.
    void stream_all() {
        try {
            for (std::size_t k = 0; k < ranges_.size() && !stop_; ++k) {
                stream(ranges_[k]);
                const std::lock_guard lock(progress_);
                ranges_done_ = k + 1;
                streamed_more_.notify_all();
            }
        } catch (...) {
            const std::lock_guard lock(progress_);
            stream_error_ = std::current_exception();
            streamed_more_.notify_all();
        }
    }

    void pack(const plan::Round& round, const RoundLayout& l, RawBuffer& window) {
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
                    read_piece(p, window.span().subspan(at, span), p.dst_pitch);
                    continue;
                }
                auto& at = cursor[static_cast<std::size_t>(win.writer)];
                read_piece(p, send_.span().subspan(at, p.dst_bytes()), p.dst_row_bytes());
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
        if (p.src_contiguous() && src_row <= kBlockBytes) {
            // Rows that land apart (a TP shard of a dim-1 split) or need a cast: whole rows per read of about
            // kBlockBytes, then copied or cast into place; a read per row would cost a syscall per few KB.
            const std::uint64_t per_read = kBlockBytes / src_row;
            for (std::uint64_t r = 0; r < p.rows; r += per_read)
                read_rows(sources_, scratch_, p, p.src_offset + r * src_row, std::min(per_read, p.rows - r), p.cols,
                          out_pitch, out.subspan(r * out_pitch));
            return;
        }
        // Rows apart in the source, or longer than a block: row by row, at most a block per read.
        const std::uint64_t ses = dtype_size(p.src_dtype), des = dtype_size(p.dst_dtype);
        const std::uint64_t per_read = std::max<std::uint64_t>(1, kBlockBytes / ses);
        if (!same) scratch_.grow(std::min(p.cols, per_read) * ses);
        for (std::uint64_t r = 0; r < p.rows; ++r) {
            for (std::uint64_t c = 0; c < p.cols; c += per_read) {
                const std::uint64_t n = std::min(per_read, p.cols - c);
                auto to = out.subspan(r * out_pitch + c * des, n * des);
                const auto at = p.src_offset + r * p.src_pitch + c * ses;
                if (same) {
                    sources_.read_at(p.src_file, at, to);
                } else {
                    auto in = scratch_.span().first(n * ses);
                    sources_.read_at(p.src_file, at, in);
                    io::cast(p.src_dtype, p.dst_dtype, in, to);
                }
            }
        }
    }

    void place(const plan::Round& round, const RoundLayout& l, Buffer& out) {
        out.placed.clear();
        out.stretches.clear();
        std::vector<std::uint64_t> cursor(l.recv_displs.begin(), l.recv_displs.end());
        for (auto w = round.first_window; w < round.first_window + round.window_count; ++w) {
            const auto& win = plan_.windows[w];
            if (win.writer != comm_.rank()) continue;
            auto buffer = out.window.span().subspan(l.window_at[w - round.first_window], win.size);
            for (auto i = win.first_piece; i < win.first_piece + win.piece_count; ++i) {
                const auto& p = plan_.pieces[i];
                if (local(p, win)) continue;  // read into place by pack(), or streamed
                auto& at = cursor[static_cast<std::size_t>(p.reader)];
                const std::uint64_t row = p.dst_row_bytes();
                for (std::uint64_t r = 0; r < p.rows; ++r) {
                    const auto* from = recv_.span().data() + at + r * row;
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

    // Hands window w to the sink whole or, around its streamed ranges, as the stretches between them.
    void add_window(Buffer& out, std::uint32_t w, std::span<const std::byte> bytes) {
        const auto& win = plan_.windows[w];
        const auto first = window_ranges_[w], last = window_ranges_[w + 1];
        if (first == last) {
            out.placed.push_back({w, &win, bytes});
            return;
        }
        std::uint64_t at = win.offset;
        const auto stretch = [&](std::uint64_t end) {
            if (end <= at) return;
            out.stretches.push_back({win.file, at, end - at, win.writer, 0, 0});
            out.placed.push_back({w, &out.stretches.back(), bytes.subspan(at - win.offset, end - at)});
        };
        for (auto k = first; k < last; ++k) {
            stretch(ranges_[k].offset);
            at = ranges_[k].offset + ranges_[k].bytes;
        }
        stretch(win.offset + win.size);
    }

    // On the streaming thread: one range, from source files to sink through buffers that stay in cache, a few
    // rows (or, for one contiguous piece, a few hundred KiB) at a time, cast on the way. The sink gets each part
    // as a window of its own (a concurrent sink accepts stretches).
    void stream(const plan::StreamedRange& r) {
        const auto& win = plan_.windows[r.window];
        const auto write = [&](std::uint64_t at, std::span<const std::byte> bytes) {
            const plan::Window stretch{win.file, at, bytes.size(), win.writer, 0, 0};
            const io::WindowBytes one{r.window, &stretch, bytes};
            sink_.write_round(kStreamedRound, std::span(&one, 1));
        };
        if (r.rows == 1) {
            const auto& p = plan_.pieces[r.pieces.front()];
            const std::uint64_t ses = dtype_size(p.src_dtype), des = dtype_size(p.dst_dtype);
            const std::uint64_t step = std::max<std::uint64_t>(1, kStreamBytes / std::max(ses, des));
            for (std::uint64_t e = 0; e < p.cols && !stop_; e += step) {
                const std::uint64_t n = std::min(step, p.cols - e);
                bounce_.grow(n * des);
                const auto part = bounce_.span().first(n * des);
                read_rows(streamed_, incoming_, p, p.src_offset + e * ses, 1, n, n * des, part);
                streamed_bytes_ += n * ses;
                write(p.dst_offset + e * des, part);
            }
            return;
        }
        const std::uint64_t step = std::max<std::uint64_t>(1, kStreamBytes / r.pitch);
        for (std::uint64_t row = 0; row < r.rows && !stop_; row += step) {
            const std::uint64_t n = std::min(step, r.rows - row);
            assembled_.grow(n * r.pitch);
            for (const auto i : r.pieces) {
                const auto& p = plan_.pieces[i];
                read_rows(streamed_, incoming_, p, p.src_offset + row * p.src_row_bytes(), n, p.cols, r.pitch,
                          assembled_.span().subspan(p.dst_offset - r.offset));
                streamed_bytes_ += n * p.src_row_bytes();
            }
            write(r.offset + row * r.pitch, assembled_.span().first(n * r.pitch));
        }
    }

    const Comm& comm_;
    const TransferPlan& plan_;
    ReadPacer pacer_;  // both readers' reads count against the rank's one rate
    SourceReader sources_;
    SourceReader streamed_;  // the streaming thread's own files
    io::OutputSink& sink_;
    const DescribeCopy& describe_;
    std::vector<plan::StreamedRange> ranges_;  // this rank's, by window
    std::vector<bool> streamed_pieces_;          // per piece of the plan: part of one of ranges_
    std::vector<std::size_t> window_ranges_;     // per window: where its ranges start in ranges_
    RawBuffer send_, recv_, scratch_;
    RawBuffer bounce_, incoming_, assembled_;  // the streaming thread's
    std::uint64_t streamed_bytes_ = 0;           // read by the streaming thread
    std::thread streaming_;
    std::mutex progress_;
    std::condition_variable streamed_more_;
    std::size_t ranges_done_ = 0;     // ranges_[0, ranges_done_) are written
    std::exception_ptr stream_error_;
    std::atomic<bool> stop_ = false;  // set when the executor is left early
    Buffer buffers_[2];  // rounds alternate: one is assembled while the other is written
    std::thread writing_;
    std::exception_ptr write_error_;
    TransferStats stats_;
};

}  // namespace

TransferStats execute_transfers(const Comm& comm, const TransferPlan& plan, const std::vector<tensors::SourceFile>& sources,
                                io::OutputSink& sink, const DescribeCopy& describe, const RoundDone& round_done,
                                const ReadLimits& limits) {
    return Executor(comm, plan, sources, sink, describe, limits).run(round_done);
}

}  // namespace m2h::exchange
