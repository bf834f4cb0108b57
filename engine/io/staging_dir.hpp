#pragma once
// The output folder appears complete or not at all: everything is written into a hidden sibling
// (".<name>.m2h-partial") that is renamed onto the final name at the end. A leftover staging folder of a
// killed run is removed before a new one starts.
#include <string>

namespace m2h::io {

class StagingDir {
public:
    // Checks the final path (it must not exist unless `overwrite`), creates parents and the staging folder.
    StagingDir(std::string final_path, bool overwrite);
    StagingDir(const StagingDir&) = delete;
    StagingDir& operator=(const StagingDir&) = delete;
    ~StagingDir();  // removes the staging folder unless committed

    const std::string& path() const noexcept { return staging_; }
    const std::string& final_path() const noexcept { return final_; }
    // Renames staging onto the final path (replacing an old output only now, when the new one is complete); with
    // `durable`, then fsyncs the parent folder so that the rename survives a crash.
    void commit(bool durable = false);

private:
    void swap_into_place();

    std::string final_;
    std::string staging_;
    bool overwrite_;
    bool committed_ = false;
};

std::string staging_path_for(const std::string& final_path);

}  // namespace m2h::io
