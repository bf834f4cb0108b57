#include "io/disk_space.hpp"

#include <cerrno>
#include <cstring>
#include <sys/statvfs.h>

#include "common/byte_size.hpp"
#include "common/error.hpp"

namespace m2h::io {

FreeSpace free_space(const std::string& dir) {
    struct statvfs st {};
    if (::statvfs(dir.c_str(), &st) != 0) throw Error(dir, std::string("cannot read the free space: ") + std::strerror(errno));
    return {static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize, static_cast<std::uint64_t>(st.f_favail)};
}

std::string space_shortfall(std::uint64_t need_bytes, std::uint64_t need_files, const FreeSpace& free) {
    if (need_bytes > free.bytes)
        return "not enough free space: the output needs " + format_bytes(need_bytes) + ", the filesystem has " +
               format_bytes(free.bytes) + " free";
    if (need_files > free.inodes)
        return "not enough free inodes: the output needs " + std::to_string(need_files) + " files, the filesystem has " +
               std::to_string(free.inodes) + " inodes free";
    return {};
}

}  // namespace m2h::io
