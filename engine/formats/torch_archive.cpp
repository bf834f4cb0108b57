#include "formats/torch_archive.hpp"

#include <charconv>
#include <optional>
#include <unordered_map>

#include "common/error.hpp"
#include "pickle/pickle_machine.hpp"

namespace m2h::formats {
namespace {

std::string_view trimmed(const std::vector<std::byte>& bytes) {
    std::string_view s(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\0')) s.remove_suffix(1);
    while (!s.empty() && (s.front() == ' ' || s.front() == '\n')) s.remove_prefix(1);
    return s;
}

// Overflow-safe a*b; nullopt on overflow.
std::optional<std::uint64_t> mul(std::uint64_t a, std::uint64_t b) {
    std::uint64_t r = 0;
    if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
    return r;
}
std::optional<std::uint64_t> add(std::uint64_t a, std::uint64_t b) {
    std::uint64_t r = 0;
    if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
    return r;
}

bool is_quantized_storage(std::string_view name) {
    return name == "QInt8Storage" || name == "QUInt8Storage" || name == "QInt32Storage" || name == "QUInt4x2Storage" ||
           name == "QUInt2x4Storage";
}

}  // namespace

TorchArchive::TorchArchive(const io::ByteSource& source) : zip_(source) {
    const std::string where = source.name();
    if (zip_.find("data.pkl") == nullptr)
        throw Error(where, "not a torch.save archive: no record '" + std::string(zip_.prefix()) + "/data.pkl'");

    // TorchScript archives keep their version under .data/; torch.save ones at the top.
    const auto* version = zip_.find("version");
    if (version == nullptr) version = zip_.find(".data/version");
    if (version == nullptr) throw Error(where, "not a torch.save archive: no version record");
    if (version->size > 64) throw Error(where, "version record is " + std::to_string(version->size) + " bytes");
    const auto vbytes = zip_.read(*version);
    const auto vtext = trimmed(vbytes);
    std::uint64_t v = 0;
    const auto [p, ec] = std::from_chars(vtext.data(), vtext.data() + vtext.size(), v);
    if (ec != std::errc() || p != vtext.data() + vtext.size() || vtext.empty())
        throw Error(where, "unreadable archive version '" + std::string(vtext) + "'");
    if (v < 1 || v > 10) throw Error(where, "unsupported archive version " + std::to_string(v) + " (expected 1 to 10)");

    // Absent before torch 2.1: those files were all written little-endian.
    if (const auto* bo = zip_.find("byteorder")) {
        if (bo->size > 64) throw Error(where, "byteorder record is " + std::to_string(bo->size) + " bytes");
        const auto bytes = zip_.read(*bo);
        const auto text = trimmed(bytes);
        if (text == "big") big_endian_ = true;
        else if (text != "little") throw Error(where, "unknown byteorder '" + std::string(text) + "'");
    }
}

pickle::ValuePtr TorchArchive::load() const {
    const std::string where = name();
    const auto* pkl = zip_.find("data.pkl");
    const auto bytes = zip_.read(*pkl);

    std::unordered_map<std::string, pickle::ValuePtr> storages;  // many tensors share one storage
    const pickle::PersistentLoad persistent_load = [&](const pickle::ValuePtr& pid) -> pickle::ValuePtr {
        const auto* t = pid->as<pickle::Tuple>();
        if (t == nullptr || t->items.size() != 5) throw Error(where, "persistent id is not a 5-tuple (" + pid->kind() + ")");
        const auto* tag = t->items[0]->as<std::string>();
        if (tag == nullptr || *tag != "storage") throw Error(where, "persistent id is not a 'storage' id");
        const auto* cls = t->items[1]->as<pickle::ClassRef>();
        const auto* key = t->items[2]->as<std::string>();
        const auto* location = t->items[3]->as<std::string>();
        const auto* numel = t->items[4]->as<std::int64_t>();
        if (cls == nullptr || key == nullptr || location == nullptr || numel == nullptr || *numel < 0)
            throw Error(where, "malformed storage persistent id");
        if (cls->module != "torch") throw Error(where, "storage class " + cls->qualified() + " is not a torch storage");
        if (is_quantized_storage(cls->name))
            throw Error(where, "storage '" + *key + "' is quantized (" + cls->qualified() + "), which is not supported");
        const auto dtype = dtype_from_storage_class(cls->name);
        if (!dtype) throw Error(where, "storage '" + *key + "' has unsupported class " + cls->qualified());
        const bool untyped = cls->name == "UntypedStorage";
        const auto nbytes = mul(static_cast<std::uint64_t>(*numel), untyped ? 1 : dtype_size(*dtype));
        if (!nbytes) throw Error(where, "storage '" + *key + "' size overflows");

        if (const auto it = storages.find(*key); it != storages.end()) {
            const auto* s = it->second->as<pickle::StorageRef>();
            if (s->dtype != *dtype || s->nbytes != *nbytes)
                throw Error(where, "storage '" + *key + "' is described two different ways");
            return it->second;
        }
        const auto* record = zip_.find("data/" + *key);
        if (record == nullptr) throw Error(where, "storage record 'data/" + *key + "' is missing");
        if (record->size != *nbytes)
            throw Error(where, "storage record 'data/" + *key + "' holds " + std::to_string(record->size) +
                                   " bytes but its persistent id says " + std::to_string(*nbytes));
        auto ref = pickle::make(pickle::StorageRef{*key, *dtype, *nbytes, *location});
        storages.emplace(*key, ref);
        return ref;
    };
    return pickle::unpickle(bytes, where + " (" + pkl->name + ")", persistent_load);
}

TensorLocation TorchArchive::tensor_location(const pickle::TensorRef& tensor, const std::string& key) const {
    const std::string where = name();
    const auto fail = [&](const std::string& problem) -> void { throw Error(where, "tensor '" + key + "': " + problem); };
    if (big_endian_) fail("the archive was written on a big-endian machine, which is not supported");
    // A typed storage fixes the element type; untyped storages (uint8 here) carry any dtype (_rebuild_tensor_v3).
    if (tensor.dtype != tensor.storage.dtype && tensor.storage.dtype != DType::U8)
        fail(std::string("dtype ") + std::string(torch_name(tensor.dtype)) + " differs from its storage's " +
             std::string(torch_name(tensor.storage.dtype)));
    if (tensor.size.size() != tensor.stride.size()) fail("size and stride have different lengths");

    std::uint64_t numel = 1;
    for (const auto s : tensor.size) {
        const auto n = mul(numel, s);
        if (!n) fail("element count overflows");
        numel = *n;
    }
    const auto* record = zip_.find("data/" + tensor.storage.key);
    if (record == nullptr) fail("storage record 'data/" + tensor.storage.key + "' is missing");
    const std::uint64_t base = zip_.data_offset(*record);
    if (numel == 0) return TensorLocation{base, 0};

    // Row-major contiguity; a dimension of size 1 is never stepped over, so its stride is free.
    std::uint64_t expected = 1;
    for (std::size_t i = tensor.size.size(); i-- > 0;) {
        if (tensor.size[i] != 1 && tensor.stride[i] != expected) fail("is not contiguous (the engine needs row-major tensors)");
        expected *= tensor.size[i];  // cannot overflow: bounded by numel
    }
    const std::uint64_t es = dtype_size(tensor.dtype);
    const auto end_elems = add(tensor.storage_offset, numel);
    const auto end_bytes = end_elems ? mul(*end_elems, es) : std::nullopt;
    if (!end_bytes || *end_bytes > record->size)
        fail("elements run past the end of storage '" + tensor.storage.key + "' (" + std::to_string(record->size) +
             " bytes)");
    return TensorLocation{base + tensor.storage_offset * es, numel * es};
}

}  // namespace m2h::formats
