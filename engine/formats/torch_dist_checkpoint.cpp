#include "formats/torch_dist_checkpoint.hpp"

#include <algorithm>
#include <filesystem>
#include <memory>

#include "common/error.hpp"
#include "formats/megatron_args.hpp"
#include "formats/torch_archive.hpp"
#include "io/byte_source.hpp"
#include "io/file.hpp"
#include "io/zstd_item.hpp"

namespace m2h::formats {
namespace fs = std::filesystem;
namespace {

std::string data_path(const std::string& dir, const DcpStorage& storage, const std::string& fqn) {
    const auto path = (fs::path(dir) / storage.relative_path).string();
    std::error_code ec;
    if (!fs::is_regular_file(path, ec))
        throw Error(path, "missing data file (referenced by .metadata for " + fqn + ")");
    return path;
}

// Only zstd is a real transform (rot13 exists for torch's own tests); several would be applied in order.
bool is_zstd(const DcpStorage& storage, const std::string& path, const std::string& fqn) {
    if (storage.transforms.empty()) return false;
    if (storage.transforms.size() == 1 && storage.transforms.front().starts_with("stream.zstd/")) return true;
    throw Error(path + ": " + fqn, "unsupported stream transform '" + storage.transforms.front() + "'");
}

// What a zstd item may decompress to. A tensor chunk's item is torch.save of the chunk (DCP clones views, so
// its storage is the chunk): the chunk's bytes plus a few KB of records. The slack is generous; past it the
// item is a decompression bomb, refused before it is allocated. Byte items (the common state) are small pickles.
constexpr std::uint64_t kItemArchiveSlack = std::uint64_t{16} << 20;
constexpr std::uint64_t kMaxByteItemBytes = std::uint64_t{1} << 30;

std::uint64_t max_chunk_item_bytes(const DcpTensor& tensor, const DcpChunk& chunk) {
    std::uint64_t n = dtype_size(tensor.dtype);
    for (auto d : chunk.sizes)
        if (__builtin_mul_overflow(n, d, &n)) return UINT64_MAX;
    return n > UINT64_MAX - kItemArchiveSlack ? UINT64_MAX : n + kItemArchiveSlack;
}

// An item's bytes as a byte source: a slice of the file, or the decompressed item (at most `max_bytes`).
std::unique_ptr<io::ByteSource> item_source(const io::File& file, const DcpStorage& storage, bool zstd,
                                            std::uint64_t max_bytes) {
    if (!zstd) return std::make_unique<io::FileRegion>(file, storage.offset, storage.length);
    return std::make_unique<io::MemorySource>(
        io::decompress_zstd_item(file, storage.offset, storage.length, max_bytes),
        file.path() + " [zstd item at " + std::to_string(storage.offset) + "]");
}

CommonState common_from_dict(const pickle::Value& common, const std::string& source) {
    CommonState state;
    const auto args = pickle::get(common, "args");
    if (!args) throw Error(source, "no `args` in the common state");
    state.args = args_to_json(*args, source);
    if (const auto it = pickle::get(common, "iteration"); it && it->is<std::int64_t>()) state.iteration = *it->as<std::int64_t>();
    return state;
}

}  // namespace

bool is_training_state_key(std::string_view fqn) {
    return fqn.starts_with("optimizer.") || fqn.starts_with("rng_state") || fqn.starts_with("common_state") ||
           fqn.starts_with("rerun_state_machine") || fqn.ends_with("_extra_state") ||
           fqn.find("_extra_state/") != std::string_view::npos;
}

std::vector<std::pair<const DcpTensor*, const DcpChunk*>> model_chunks(const DcpMetadata& metadata) {
    std::vector<std::pair<const DcpTensor*, const DcpChunk*>> out;
    for (const auto& t : metadata.tensors) {
        if (is_training_state_key(t.fqn)) continue;
        for (const auto& c : t.chunks) out.emplace_back(&t, &c);
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
        return a.first->fqn != b.first->fqn ? a.first->fqn < b.first->fqn : a.second->offsets < b.second->offsets;
    });
    return out;
}

tensors::SourceTensor index_dcp_chunk(const std::string& dir, const DcpTensor& tensor, const DcpChunk& chunk) {
    const auto path = data_path(dir, chunk.storage, tensor.fqn);
    const bool zstd = is_zstd(chunk.storage, path, tensor.fqn);
    io::File file(path, io::File::Mode::Read);
    const auto region = item_source(file, chunk.storage, zstd, max_chunk_item_bytes(tensor, chunk));
    TorchArchive archive(*region);
    const auto root = archive.load();
    const auto* t = root ? root->as<pickle::TensorRef>() : nullptr;
    const std::string where = path + ": " + tensor.fqn;
    if (!t) throw Error(where, "chunk item is a " + std::string(root ? root->kind() : "nothing") + ", expected a tensor");
    if (t->dtype != tensor.dtype)
        throw Error(where, "chunk dtype " + std::string(torch_name(t->dtype)) + " but .metadata says " +
                               std::string(torch_name(tensor.dtype)));
    std::uint64_t numel = 1, expected = 1;
    for (auto d : t->size) numel *= d;
    for (auto d : chunk.sizes) expected *= d;
    if (numel != expected)
        throw Error(where, "chunk holds " + std::to_string(numel) + " elements but .metadata says " + std::to_string(expected));
    const auto loc = archive.tensor_location(*t, tensor.fqn);
    tensors::SourceTensor s;
    s.key = tensor.fqn;
    s.dtype = t->dtype;
    s.shape = chunk.sizes;  // the data is a row-major block of the chunk's sizes
    // A plain item is read in place; a zstd item's offsets are into its decompressed bytes.
    s.offset = zstd ? loc.offset : *region->file_offset(loc.offset);
    s.global_offset = chunk.offsets;
    s.global_shape = tensor.size;
    return s;
}

CommonState read_common_state(const std::string& dir, const DcpMetadata& metadata) {
    const auto common_pt = (fs::path(dir) / "common.pt").string();
    if (io::path_exists(common_pt)) {
        io::File file(common_pt, io::File::Mode::Read);
        io::FileRegion region(file);
        const auto root = TorchArchive(region).load();
        if (!root) throw Error(common_pt, "empty common state");
        return common_from_dict(*root, common_pt);
    }
    for (const auto& item : metadata.bytes) {
        if (!item.fqn.starts_with("common_state")) continue;
        const auto path = data_path(dir, item.storage, item.fqn);
        io::File file(path, io::File::Mode::Read);
        const auto region = item_source(file, item.storage, is_zstd(item.storage, path, item.fqn), kMaxByteItemBytes);
        const auto root = TorchArchive(*region).load();
        // Megatron saves ShardedObjects as a list: element 0 is the common state dict.
        const auto* list = root ? root->as<pickle::List>() : nullptr;
        if (!list || list->items.empty() || !list->items.front())
            throw Error(path + ": " + item.fqn, "expected a list holding the common state");
        return common_from_dict(*list->items.front(), path + ": " + item.fqn);
    }
    throw Error(dir, "no common.pt and no common_state item: cannot read the saved args");
}

}  // namespace m2h::formats
