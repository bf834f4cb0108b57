#pragma once
// The files the launcher reads and writes on this machine: where its sbatch/ and configs/ folders are, whole
// files read for parsing, and job scripts written so that sbatch never sees a half-written one.
#include <filesystem>
#include <string>
#include <vector>

namespace m2h::launch {

// The folder this program's binary is in (the current folder when /proc/self/exe cannot be read).
std::filesystem::path exe_dir();

// The existing folders named `sub` (e.g. "sbatch", "configs/profiles") beside the build tree, in an install
// or in the source tree this binary was built from, in that order of preference.
std::vector<std::string> data_dirs(const std::string& sub);

// The whole file; throws m2h::Error(path, "cannot read <what>").
std::string read_file(const std::string& path, const std::string& what);

// Writes an executable job script atomically (a temporary file renamed over `path`).
void write_script(const std::string& path, const std::string& text);

}  // namespace m2h::launch
