#include "io/staging_dir.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>

#include "common/error.hpp"
#include "io/file.hpp"

namespace m2h::io {
namespace fs = std::filesystem;

std::string staging_path_for(const std::string& final_path) {
    fs::path p = fs::absolute(final_path).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    return (p.parent_path() / ("." + p.filename().string() + ".m2h-partial")).string();
}

StagingDir::StagingDir(std::string final_path, bool overwrite) : overwrite_(overwrite) {
    fs::path p = fs::absolute(final_path).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    final_ = p.string();
    staging_ = staging_path_for(final_);
    std::error_code ec;
    if (fs::exists(p, ec) && !overwrite)
        throw Error(final_, "already exists (pass --overwrite to replace it)");
    if (fs::exists(p, ec) && !fs::is_directory(p, ec)) throw Error(final_, "exists and is not a folder");
    fs::create_directories(p.parent_path(), ec);
    if (ec) throw Error(p.parent_path().string(), "cannot create: " + ec.message());
    fs::remove_all(staging_, ec);  // a killed run's leftovers
    if (!fs::create_directory(staging_, ec) || ec)
        throw Error(staging_, "cannot create the staging folder: " + (ec ? ec.message() : "it exists"));
}

StagingDir::~StagingDir() {
    if (!committed_) {
        std::error_code ec;
        fs::remove_all(staging_, ec);
    }
}

void StagingDir::commit(bool durable) {
    swap_into_place();
    if (durable) sync_path(fs::path(final_).parent_path().string());
}

void StagingDir::swap_into_place() {
    std::error_code ec;
    if (fs::exists(final_, ec)) {
        if (!overwrite_) throw Error(final_, "appeared while converting; not replacing it");
        // One atomic swap: at every instant the final path holds either the old output or the new one.
        if (::renameat2(AT_FDCWD, staging_.c_str(), AT_FDCWD, final_.c_str(), RENAME_EXCHANGE) == 0) {
            committed_ = true;
            fs::remove_all(staging_, ec);  // now the old output
            return;
        }
        if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
            throw Error(final_, std::string("cannot swap the finished output into place: ") + std::strerror(errno));
        // A filesystem without RENAME_EXCHANGE: move the old output aside first (a short window without one).
        const std::string old = staging_ + ".old";
        fs::remove_all(old, ec);
        fs::rename(final_, old, ec);
        if (ec) throw Error(final_, "cannot move the old output aside: " + ec.message());
        fs::rename(staging_, final_, ec);
        if (ec) throw Error(final_, "cannot rename the finished output into place: " + ec.message());
        committed_ = true;
        fs::remove_all(old, ec);
        return;
    }
    fs::rename(staging_, final_, ec);
    if (ec) throw Error(final_, "cannot rename the finished output into place: " + ec.message());
    committed_ = true;
}

}  // namespace m2h::io
