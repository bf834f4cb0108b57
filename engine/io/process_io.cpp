#include "io/process_io.hpp"

#include <fstream>
#include <string>

namespace m2h::io {

std::uint64_t process_bytes_read() {
    std::ifstream in("/proc/self/io");
    std::string key;
    std::uint64_t value = 0;
    while (in >> key >> value)
        if (key == "rchar:") return value;
    return 0;
}

}  // namespace m2h::io
