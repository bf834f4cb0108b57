#pragma once
// RAII file descriptor with positioned, complete reads and writes. Every error names the path.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace m2h::io {

class File {
public:
    enum class Mode { Read, ReadWrite, CreateTruncate };

    File() = default;
    File(std::string path, Mode mode);
    File(const File&) = delete;
    File& operator=(const File&) = delete;
    File(File&& other) noexcept;
    File& operator=(File&& other) noexcept;
    ~File();

    const std::string& path() const noexcept { return path_; }
    bool is_open() const noexcept { return fd_ >= 0; }
    std::uint64_t size() const;

    // Reads exactly out.size() bytes at `offset`; a short read (file too small) is an Error naming the file.
    void read_at(std::uint64_t offset, std::span<std::byte> out) const;
    void write_at(std::uint64_t offset, std::span<const std::byte> data) const;
    void truncate(std::uint64_t size) const;
    // Allocates the blocks of [0, size) without writing them (fallocate), so that a full filesystem or quota shows
    // now. False where the filesystem cannot (some network filesystems): nothing is reserved then.
    bool reserve(std::uint64_t size) const;
    void sync() const;

private:
    std::string path_;
    int fd_ = -1;
};

// fsync of a file or folder by its path: a folder's entries (names created, renamed or removed) are only durable
// once the folder itself is synced.
void sync_path(const std::string& path);

// Reads a whole small file (tracker files, metadata.json, assets).
std::string read_text_file(const std::string& path);

// Creates (or truncates) `path` holding `text` (config.json, the manifest, the model card).
void write_text_file(const std::string& path, std::string_view text);

// std::filesystem::exists, except that a path that cannot be checked (a symbolic link loop, a permission
// problem) is an Error naming it rather than a std::filesystem exception.
bool path_exists(const std::string& path);

}  // namespace m2h::io
