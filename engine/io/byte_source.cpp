#include "io/byte_source.hpp"

#include <cstring>

#include "common/error.hpp"

namespace m2h::io {
namespace {

// Overflow-safe "does [offset, offset+n) lie inside [0, size)".
bool fits(std::uint64_t offset, std::uint64_t n, std::uint64_t size) { return offset <= size && n <= size - offset; }

[[noreturn]] void past_end(const ByteSource& s, std::uint64_t offset, std::uint64_t n) {
    throw Error(s.name(), "read of " + std::to_string(n) + " bytes at offset " + std::to_string(offset) +
                              " goes past the end (size " + std::to_string(s.size()) + ")");
}

}  // namespace

FileRegion::FileRegion(const File& file, std::uint64_t base, std::uint64_t length)
    : file_(&file), base_(base), length_(length) {
    const auto size = file.size();
    if (!fits(base, length, size))
        throw Error(file.path(), "region of " + std::to_string(length) + " bytes at offset " + std::to_string(base) +
                                     " does not fit in the file (size " + std::to_string(size) + ")");
}

FileRegion::FileRegion(const File& file) : file_(&file), base_(0), length_(file.size()), whole_(true) {}

void FileRegion::read(std::uint64_t offset, std::span<std::byte> out) const {
    if (!fits(offset, out.size(), length_)) past_end(*this, offset, out.size());
    file_->read_at(base_ + offset, out);
}

std::string FileRegion::name() const {
    if (whole_) return file_->path();
    return file_->path() + " [bytes " + std::to_string(base_) + ".." + std::to_string(base_ + length_) + ")";
}

void MemorySource::read(std::uint64_t offset, std::span<std::byte> out) const {
    if (!fits(offset, out.size(), bytes_.size())) past_end(*this, offset, out.size());
    if (!out.empty()) std::memcpy(out.data(), bytes_.data() + offset, out.size());
}

}  // namespace m2h::io
