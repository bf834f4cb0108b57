#include "io/file.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.hpp"

namespace m2h::io {
namespace {

std::string errno_text() { return std::strerror(errno); }

}  // namespace

File::File(std::string path, Mode mode) : path_(std::move(path)) {
    int flags = O_CLOEXEC;
    switch (mode) {
        case Mode::Read: flags |= O_RDONLY; break;
        case Mode::ReadWrite: flags |= O_RDWR; break;
        case Mode::CreateTruncate: flags |= O_RDWR | O_CREAT | O_TRUNC; break;
    }
    fd_ = ::open(path_.c_str(), flags, 0644);
    if (fd_ < 0) throw Error(path_, "cannot open: " + errno_text());
    if (mode == Mode::Read) {
        struct stat st {};
        if (::fstat(fd_, &st) == 0 && S_ISDIR(st.st_mode)) {
            ::close(fd_);
            fd_ = -1;
            throw Error(path_, "is a directory, expected a file");
        }
    }
}

File::File(File&& other) noexcept : path_(std::move(other.path_)), fd_(other.fd_) { other.fd_ = -1; }

File& File::operator=(File&& other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        path_ = std::move(other.path_);
        fd_ = other.fd_;
        other.fd_ = -1;
    }
    return *this;
}

File::~File() {
    if (fd_ >= 0) ::close(fd_);
}

std::uint64_t File::size() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw Error(path_, "cannot stat: " + errno_text());
    return static_cast<std::uint64_t>(st.st_size);
}

void File::read_at(std::uint64_t offset, std::span<std::byte> out) const {
    std::size_t done = 0;
    while (done < out.size()) {
        const ssize_t n = ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw Error(path_, "read failed at offset " + std::to_string(offset + done) + ": " + errno_text());
        }
        if (n == 0)
            throw Error(path_, "truncated: needed " + std::to_string(out.size()) + " bytes at offset " +
                                   std::to_string(offset) + " but the file ends at " +
                                   std::to_string(offset + done));
        done += static_cast<std::size_t>(n);
    }
}

void File::write_at(std::uint64_t offset, std::span<const std::byte> data) const {
    std::size_t done = 0;
    while (done < data.size()) {
        const ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw Error(path_, "write failed at offset " + std::to_string(offset + done) + ": " + errno_text());
        }
        done += static_cast<std::size_t>(n);
    }
}

bool File::reserve(std::uint64_t size) const {
    if (size == 0) return true;
    // fallocate, not posix_fallocate: glibc's fallback for filesystems without it writes every byte.
    if (::fallocate(fd_, 0, 0, static_cast<off_t>(size)) == 0) return true;
    if (errno == EOPNOTSUPP || errno == ENOSYS) return false;
    throw Error(path_, "cannot reserve " + std::to_string(size) + " bytes: " + errno_text());
}

void File::truncate(std::uint64_t size) const {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) throw Error(path_, "cannot set size: " + errno_text());
}

void File::sync() const {
    if (::fsync(fd_) != 0) throw Error(path_, "fsync failed: " + errno_text());
}

void sync_path(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(path, "cannot open to fsync: " + errno_text());
    const int rc = ::fsync(fd);
    const std::string why = rc != 0 ? errno_text() : "";
    ::close(fd);
    if (rc != 0) throw Error(path, "fsync failed: " + why);
}

void write_text_file(const std::string& path, std::string_view text) {
    File f(path, File::Mode::CreateTruncate);
    f.write_at(0, std::as_bytes(std::span(text.data(), text.size())));
}

std::string read_text_file(const std::string& path) {
    File f(path, File::Mode::Read);
    const auto n = f.size();
    if (n > (64u << 20)) throw Error(path, "unexpectedly large (" + std::to_string(n) + " bytes)");
    std::string text(n, '\0');
    f.read_at(0, std::as_writable_bytes(std::span(text.data(), text.size())));
    return text;
}

bool path_exists(const std::string& path) {
    std::error_code ec;
    const bool yes = std::filesystem::exists(path, ec);
    if (ec) throw Error(path, "cannot access: " + ec.message());
    return yes;
}

}  // namespace m2h::io
