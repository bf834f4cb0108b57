#include "io/output_sink.hpp"

#include <algorithm>

namespace m2h::io {

namespace {
// A window is one stretch of a file, but it goes to the kernel in calls of 1 MiB: buffered writes of tens of MiB
// in one call ran 3-8x slower than the same bytes in 1 MiB calls on the benchmark machine (docs/performance.md),
// and 1 MiB is still a whole Lustre/GPFS stripe unit or more.
constexpr std::size_t kWriteCall = std::size_t{1} << 20;
}  // namespace

const File& FileSink::file(std::uint32_t index) {
    const std::lock_guard lock(opening_);
    auto& f = files_[index];
    if (!f) f = std::make_unique<File>(paths_.at(index), File::Mode::ReadWrite);
    return *f;
}

void FileSink::write_round(std::size_t, std::span<const WindowBytes> windows) {
    for (const auto& w : windows) {
        const auto& f = file(w.window->file);
        for (std::size_t at = 0; at < w.bytes.size(); at += kWriteCall)
            f.write_at(w.window->offset + at, w.bytes.subspan(at, std::min(kWriteCall, w.bytes.size() - at)));
    }
}

}  // namespace m2h::io
