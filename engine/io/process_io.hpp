#pragma once
#include <cstdint>

namespace m2h::io {

// Bytes this process has read through read()/pread() so far (Linux /proc/self/io `rchar`), page cache or not:
// the honest count of what the conversion pulled from its input files. 0 where /proc is unavailable.
std::uint64_t process_bytes_read();

}  // namespace m2h::io
