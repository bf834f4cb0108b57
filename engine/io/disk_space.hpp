#pragma once
// Free space on the output's filesystem, checked before any tensor moves, so that a full disk or quota is an
// error in the first second rather than a failed write an hour into a conversion.
#include <cstdint>
#include <string>

namespace m2h::io {

struct FreeSpace {
    std::uint64_t bytes = 0;   // available to an unprivileged writer (statvfs f_bavail)
    std::uint64_t inodes = 0;  // f_favail; filesystems without an inode limit report a large number
};

// statvfs of the folder `dir`; throws Error naming it.
FreeSpace free_space(const std::string& dir);

// Pure: why `need_bytes` in `need_files` new files do not fit in `free`, or empty when they do.
std::string space_shortfall(std::uint64_t need_bytes, std::uint64_t need_files, const FreeSpace& free);

}  // namespace m2h::io
