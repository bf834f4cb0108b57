#include "io/output_sink.hpp"

namespace m2h::io {

void FileSink::write_round(std::size_t, std::span<const WindowBytes> windows) {
    for (const auto& w : windows) {
        auto& f = files_[w.window->file];
        if (!f) f = std::make_unique<File>(paths_.at(w.window->file), File::Mode::ReadWrite);
        f->write_at(w.window->offset, w.bytes);
    }
}

}  // namespace m2h::io
