#include "exchange/source_reader.hpp"

#include <cstring>

#include "common/error.hpp"
#include "io/zstd_item.hpp"

namespace m2h::exchange {

namespace {
// A decompressed DCP item holds one chunk of one tensor; anything far larger than its compressed size times a
// generous ratio is not a real checkpoint.
constexpr std::uint64_t kMaxItemBytes = 1ull << 36;
constexpr std::size_t kMaxOpenFiles = 64;
}  // namespace

SourceReader::SourceReader(const std::vector<tensors::SourceFile>& files, std::uint64_t cache_bytes, ReadPacer* pacer)
    : files_(files), cache_bytes_(cache_bytes), pacer_(pacer) {}

const io::File& SourceReader::open(const std::string& path) {
    if (const auto it = by_path_.find(path); it != by_path_.end()) {
        open_.splice(open_.begin(), open_, it->second);
        return *open_.front().second;
    }
    if (open_.size() == kMaxOpenFiles) {
        by_path_.erase(open_.back().first);
        open_.pop_back();
    }
    open_.emplace_front(path, std::make_unique<io::File>(path, io::File::Mode::Read));
    by_path_[path] = open_.begin();
    return *open_.front().second;
}

const std::vector<std::byte>& SourceReader::decompressed(std::uint32_t file) {
    for (auto it = cache_.begin(); it != cache_.end(); ++it)
        if (it->first == file) {
            cache_.splice(cache_.begin(), cache_, it);
            return cache_.front().second;
        }
    const auto& f = files_.at(file);
    cache_.emplace_front(file, io::decompress_zstd_item(open(f.path), f.item_offset, f.item_length, kMaxItemBytes));
    if (pacer_) pacer_->after_read(f.item_length);  // what came from disk: the compressed item
    std::uint64_t held = 0;
    for (auto it = cache_.begin(); it != cache_.end();) {
        held += it->second.size();
        if (it != cache_.begin() && held > cache_bytes_)
            it = cache_.erase(it);
        else
            ++it;
    }
    return cache_.front().second;
}

void SourceReader::read_at(std::uint32_t file, std::uint64_t offset, std::span<std::byte> out) {
    const auto& f = files_.at(file);
    if (!f.zstd) {
        open(f.path).read_at(offset, out);
        if (pacer_) pacer_->after_read(out.size());
        return;
    }
    const auto& bytes = decompressed(file);
    if (offset > bytes.size() || out.size() > bytes.size() - offset)
        throw Error(f.name(), "read past the end of the decompressed item");
    std::memcpy(out.data(), bytes.data() + offset, out.size());
}

}  // namespace m2h::exchange
