#include "plan/transfer_plan.hpp"

#include <algorithm>
#include <climits>
#include <numeric>
#include <queue>
#include <string>

#include "common/error.hpp"

namespace m2h::plan {
namespace {

std::vector<Window> make_windows(std::vector<OutputRegion> regions, std::uint64_t max_bytes) {
    std::sort(regions.begin(), regions.end(), [](const OutputRegion& a, const OutputRegion& b) {
        return a.file != b.file ? a.file < b.file : a.offset < b.offset;
    });
    std::vector<Window> windows;
    Window cur;
    auto close = [&] {
        if (cur.size) windows.push_back(cur);
        cur = Window{};
    };
    for (const auto& r : regions) {
        if (!r.nbytes) continue;
        const bool adjacent = cur.size && cur.file == r.file && cur.offset + cur.size == r.offset;
        if (adjacent && cur.size + r.nbytes <= max_bytes) {
            cur.size += r.nbytes;
            continue;
        }
        close();
        // A tensor larger than a window is cut at row boundaries; its tail stays open for the next tensors.
        const std::uint64_t unit = std::max<std::uint64_t>(r.unit, 1);
        const std::uint64_t step = std::max(unit, max_bytes / unit * unit);
        std::uint64_t done = 0;
        while (r.nbytes - done > step) {
            windows.push_back(Window{r.file, r.offset + done, step});
            done += step;
        }
        cur = Window{r.file, r.offset + done, r.nbytes - done};
    }
    close();
    return windows;
}

// Longest-processing-time assignment of whole items to ranks.
std::vector<int> balance_whole(const std::vector<std::uint64_t>& bytes, int ranks) {
    std::vector<std::size_t> order(bytes.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return bytes[a] > bytes[b]; });
    using Load = std::pair<std::uint64_t, int>;
    std::priority_queue<Load, std::vector<Load>, std::greater<>> load;
    for (int r = 0; r < ranks; ++r) load.push({0, r});
    std::vector<int> owner(bytes.size(), 0);
    for (auto i : order) {
        auto [l, r] = load.top();
        load.pop();
        owner[i] = r;
        load.push({l + bytes[i], r});
    }
    return owner;
}

// Owner of an item in a sequence cut into `ranks` contiguous stretches of equal bytes (by its midpoint).
int stretch_owner(std::uint64_t before, std::uint64_t bytes, std::uint64_t total, int ranks) {
    if (!total) return 0;
    const long double mid = static_cast<long double>(before) + static_cast<long double>(bytes) / 2;
    return std::min(ranks - 1, static_cast<int>(mid * ranks / total));
}

// Clips one copy to the windows of its output file. Rows that fit a window go as one piece; a row that
// crosses a window boundary is cut by columns.
void clip(const CopySpec& c, const std::vector<Window>& windows, const std::vector<std::size_t>& file_first,
          std::vector<Piece>& out) {
    CopySpec copy = c;
    if (copy.rows > 1 && copy.dst_contiguous() && copy.src_contiguous()) {
        copy.cols *= copy.rows;
        copy.rows = 1;
    }
    if (copy.rows == 1) copy.src_pitch = copy.dst_pitch = 0;
    const std::uint64_t src_es = dtype_size(copy.src_dtype), dst_es = dtype_size(copy.dst_dtype);
    const std::uint64_t row_bytes = copy.dst_row_bytes();
    const auto first = windows.begin() + static_cast<std::ptrdiff_t>(file_first[copy.dst_file]);
    const auto last = windows.begin() + static_cast<std::ptrdiff_t>(file_first[copy.dst_file + 1]);
    auto window_of = [&](std::uint64_t pos) {
        auto it = std::upper_bound(first, last, pos, [](std::uint64_t p, const Window& w) { return p < w.offset; });
        if (it == first || pos >= std::prev(it)->offset + std::prev(it)->size)
            throw Error("plan", "copy " + std::to_string(copy.tag) + " writes outside the output tensors");
        return std::prev(it);
    };
    std::uint64_t i = 0;
    while (i < copy.rows) {
        const std::uint64_t row_start = copy.dst_offset + i * copy.dst_pitch;
        const auto w = window_of(row_start);
        const std::uint64_t w_end = w->offset + w->size;
        const auto index = static_cast<std::uint32_t>(w - windows.begin());
        if (row_start + row_bytes <= w_end) {
            std::uint64_t j = copy.rows;
            if (copy.rows > 1) j = std::min(copy.rows, (w_end - copy.dst_offset - row_bytes) / copy.dst_pitch + 1);
            Piece p;
            static_cast<CopySpec&>(p) = copy;
            p.src_offset = copy.src_offset + i * copy.src_pitch;
            p.dst_offset = row_start;
            p.rows = j - i;
            p.window = index;
            out.push_back(p);
            i = j;
            continue;
        }
        std::uint64_t col = 0;
        while (col < copy.cols) {
            const std::uint64_t pos = row_start + col * dst_es;
            const auto ww = window_of(pos);
            const std::uint64_t room = ww->offset + ww->size - pos;
            if (room % dst_es) throw Error("plan", "window boundary inside an element");
            const std::uint64_t n = std::min(copy.cols - col, room / dst_es);
            Piece p;
            static_cast<CopySpec&>(p) = copy;
            p.src_offset = copy.src_offset + i * copy.src_pitch + col * src_es;
            p.dst_offset = pos;
            p.cols = n;
            p.rows = 1;
            p.src_pitch = p.dst_pitch = 0;
            p.window = static_cast<std::uint32_t>(ww - windows.begin());
            out.push_back(p);
            col += n;
        }
        ++i;
    }
}

}  // namespace

TransferPlan plan_transfers(const std::vector<CopySpec>& copies, const std::vector<OutputRegion>& regions,
                            std::uint32_t source_files, const PlanLimits& limits) {
    if (limits.ranks < 1) throw Error("plan", "need at least one rank");
    if (limits.round_bytes == 0 || limits.round_bytes > static_cast<std::uint64_t>(INT_MAX))
        throw Error("plan", "round size must be between 1 byte and INT_MAX");
    const int ranks = limits.ranks;
    TransferPlan plan;
    auto windows = make_windows(regions, std::min(limits.window_bytes, limits.round_bytes));
    std::uint32_t files = 0;
    for (const auto& w : windows) files = std::max(files, w.file + 1);
    for (const auto& c : copies) files = std::max(files, c.dst_file + 1);
    std::vector<std::size_t> file_first(files + 1, windows.size());
    for (std::size_t i = windows.size(); i-- > 0;) file_first[windows[i].file] = i;
    for (std::size_t f = files; f-- > 0;) file_first[f] = std::min(file_first[f], file_first[f + 1]);

    // Writers: whole files when there are enough of them, else contiguous stretches of windows.
    std::uint64_t total = 0;
    for (const auto& w : windows) total += w.size;
    plan.total_bytes = total;
    if (files >= static_cast<std::uint32_t>(ranks)) {
        std::vector<std::uint64_t> file_bytes(files, 0);
        for (const auto& w : windows) file_bytes[w.file] += w.size;
        const auto owner = balance_whole(file_bytes, ranks);
        for (auto& w : windows) w.writer = owner[w.file];
    } else {
        std::uint64_t before = 0;
        for (auto& w : windows) {
            w.writer = stretch_owner(before, w.size, total, ranks);
            before += w.size;
        }
    }

    std::vector<Piece> pieces;
    for (const auto& c : copies) {
        if (c.src_file >= source_files) throw Error("plan", "copy names a source file that does not exist");
        clip(c, windows, file_first, pieces);
    }

    // Readers: the writers, or whole source files when there are enough of them, else contiguous stretches of
    // each file.
    std::vector<std::uint64_t> src_bytes(source_files, 0);
    for (const auto& p : pieces) src_bytes[p.src_file] += p.rows * p.src_row_bytes();
    if (limits.readers == Readers::writers) {
        for (auto& p : pieces) p.reader = windows[p.window].writer;
    } else if (source_files >= static_cast<std::uint32_t>(ranks)) {
        const auto owner = balance_whole(src_bytes, ranks);
        for (auto& p : pieces) p.reader = owner[p.src_file];
    } else {
        std::vector<std::size_t> order(pieces.size());
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
            const auto &x = pieces[a], &y = pieces[b];
            return x.src_file != y.src_file ? x.src_file < y.src_file : x.src_offset < y.src_offset;
        });
        const std::uint64_t src_total = std::accumulate(src_bytes.begin(), src_bytes.end(), std::uint64_t{0});
        std::uint64_t before = 0;
        for (auto i : order) {
            const auto b = pieces[i].rows * pieces[i].src_row_bytes();
            pieces[i].reader = stretch_owner(before, b, src_total, ranks);
            before += b;
        }
    }

    // Group pieces by window: writes first, replicas to compare after them.
    std::vector<std::vector<std::uint32_t>> by_window(windows.size());
    for (std::uint32_t i = 0; i < pieces.size(); ++i) by_window[pieces[i].window].push_back(i);
    for (auto& list : by_window)
        std::stable_partition(list.begin(), list.end(), [&](std::uint32_t i) { return !pieces[i].verify_only; });

    // Rounds: take windows writer by writer in turn while every rank's send and receive totals stay within
    // the round size; a window too large for any round goes alone.
    std::vector<std::vector<std::uint32_t>> queue(static_cast<std::size_t>(ranks));
    for (std::uint32_t w = 0; w < windows.size(); ++w) queue[static_cast<std::size_t>(windows[w].writer)].push_back(w);
    std::vector<std::size_t> next(static_cast<std::size_t>(ranks), 0);
    std::size_t remaining = windows.size();
    std::vector<std::uint32_t> window_order;
    while (remaining) {
        Round round;
        round.first_window = static_cast<std::uint32_t>(window_order.size());
        std::vector<std::uint64_t> send(static_cast<std::size_t>(ranks), 0), recv(static_cast<std::size_t>(ranks), 0);
        bool added = true;
        while (added) {
            added = false;
            for (int r = 0; r < ranks; ++r) {
                auto& n = next[static_cast<std::size_t>(r)];
                const auto& q = queue[static_cast<std::size_t>(r)];
                if (n == q.size()) continue;
                const auto w = q[n];
                std::vector<std::uint64_t> s = send;
                std::uint64_t in = recv[static_cast<std::size_t>(r)];
                for (auto pi : by_window[w]) {
                    s[static_cast<std::size_t>(pieces[pi].reader)] += pieces[pi].dst_bytes();
                    in += pieces[pi].dst_bytes();
                }
                const bool fits = in <= limits.round_bytes &&
                                  std::all_of(s.begin(), s.end(), [&](std::uint64_t x) { return x <= limits.round_bytes; });
                if (!fits && round.window_count) continue;
                if (!fits && in > static_cast<std::uint64_t>(INT_MAX))
                    throw Error("plan", "one output row is larger than an MPI message can carry");
                send = std::move(s);
                recv[static_cast<std::size_t>(r)] = in;
                window_order.push_back(w);
                ++round.window_count;
                round.bytes += windows[w].size;
                ++n;
                --remaining;
                added = true;
            }
        }
        plan.rounds.push_back(round);
    }

    plan.windows.reserve(windows.size());
    for (auto w : window_order) {
        Window win = windows[w];
        win.first_piece = static_cast<std::uint32_t>(plan.pieces.size());
        win.piece_count = static_cast<std::uint32_t>(by_window[w].size());
        for (auto pi : by_window[w]) {
            Piece p = pieces[pi];
            p.window = static_cast<std::uint32_t>(plan.windows.size());
            plan.pieces.push_back(p);
        }
        plan.windows.push_back(win);
    }
    return plan;
}

}  // namespace m2h::plan
