#include "local_files.hpp"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "common/error.hpp"

#ifndef M2H_SOURCE_DIR
#define M2H_SOURCE_DIR ""
#endif

namespace m2h::launch {

namespace fs = std::filesystem;

fs::path exe_dir() {
    std::error_code ec;
    const auto self = fs::read_symlink("/proc/self/exe", ec);
    return ec ? fs::current_path() : self.parent_path();
}

// Where sbatch/ and configs/ live: beside the build tree (build/bin/../../), an install (bin/../share/), or
// the source tree this binary was built from.
std::vector<std::string> data_dirs(const std::string& sub) {
    std::vector<std::string> dirs;
    std::error_code ec;
    for (const auto& base : {exe_dir() / ".." / "..", exe_dir() / ".." / "share" / "megatron2hf", fs::path(M2H_SOURCE_DIR)}) {
        if (base.empty()) continue;
        const auto d = (base / sub).lexically_normal();
        if (fs::is_directory(d, ec) && std::find(dirs.begin(), dirs.end(), d.string()) == dirs.end()) dirs.push_back(d.string());
    }
    return dirs;
}

std::string read_file(const std::string& path, const std::string& what) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path, "cannot read " + what);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void write_script(const std::string& path, const std::string& text) {
    const auto tmp = path + ".tmp-" + std::to_string(::getpid());
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << text;
        if (!out) throw Error(tmp, "cannot write the job script");
    }
    std::error_code ec;
    fs::permissions(tmp, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read |
                             fs::perms::others_exec, ec);
    fs::rename(tmp, path, ec);
    if (ec) throw Error(path, "cannot write the job script: " + ec.message());
}

}  // namespace m2h::launch
