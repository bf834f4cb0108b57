#pragma once
// A read-only range of bytes that a zip archive lives in: a whole file, a slice of a file (an item of a
// .distcp file), or memory (a decompressed item). Offsets are relative to the start of the range.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/file.hpp"

namespace m2h::io {

class ByteSource {
public:
    virtual ~ByteSource() = default;
    virtual std::uint64_t size() const = 0;
    // Reads exactly out.size() bytes at `offset`; reading past size() is an Error naming the source.
    virtual void read(std::uint64_t offset, std::span<std::byte> out) const = 0;
    // For messages: the file path (and the slice, for a slice).
    virtual std::string name() const = 0;
    // Where `offset` lies in a file on disk, when it does: the engine plans positioned reads from it.
    virtual std::optional<std::uint64_t> file_offset(std::uint64_t offset) const = 0;
};

class FileRegion final : public ByteSource {
public:
    FileRegion(const File& file, std::uint64_t base, std::uint64_t length);  // checks the range fits the file
    explicit FileRegion(const File& file);                                   // the whole file
    std::uint64_t size() const override { return length_; }
    void read(std::uint64_t offset, std::span<std::byte> out) const override;
    std::string name() const override;
    std::optional<std::uint64_t> file_offset(std::uint64_t offset) const override { return base_ + offset; }
    const File& file() const noexcept { return *file_; }

private:
    const File* file_;
    std::uint64_t base_;
    std::uint64_t length_;
    bool whole_ = false;
};

class MemorySource final : public ByteSource {
public:
    MemorySource(std::vector<std::byte> bytes, std::string name) : bytes_(std::move(bytes)), name_(std::move(name)) {}
    std::uint64_t size() const override { return bytes_.size(); }
    void read(std::uint64_t offset, std::span<std::byte> out) const override;
    std::string name() const override { return name_; }
    std::optional<std::uint64_t> file_offset(std::uint64_t) const override { return std::nullopt; }

private:
    std::vector<std::byte> bytes_;
    std::string name_;
};

}  // namespace m2h::io
