#include "io/safetensors_reader.hpp"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "common/error.hpp"

namespace m2h::io {
namespace {

std::uint64_t le64(std::span<const std::byte> b) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint64_t>(b[static_cast<std::size_t>(i)]);
    return v;
}

bool mul_overflows(std::uint64_t a, std::uint64_t b, std::uint64_t& out) { return __builtin_mul_overflow(a, b, &out); }

void validate(const SafetensorsHeader& h, std::uint64_t file_size, const std::string& name) {
    std::vector<const SafetensorsEntry*> order;
    for (const auto& t : h.tensors) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
        return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    std::uint64_t at = 0;
    for (const auto* t : order) {
        if (t->begin != at || t->end < t->begin)
            throw Error(name, "invalid offsets for tensor '" + t->name + "' (data must tile the buffer from 0 without gaps or overlaps)");
        std::uint64_t n = 1;
        for (auto d : t->shape)
            if (mul_overflows(n, d, n)) throw Error(name, "shape of '" + t->name + "' overflows");
        std::uint64_t bytes = 0;
        if (mul_overflows(n, dtype_size(t->dtype), bytes)) throw Error(name, "size of '" + t->name + "' overflows");
        if (t->end - t->begin != bytes)
            throw Error(name, "tensor '" + t->name + "' has " + std::to_string(t->end - t->begin) +
                                  " bytes but its dtype and shape need " + std::to_string(bytes));
        at = t->end;
    }
    if (h.data_start() + at != file_size)
        throw Error(name, "the data ends at byte " + std::to_string(h.data_start() + at) + " but the file has " +
                              std::to_string(file_size) + " bytes");
}

}  // namespace

SafetensorsHeader parse_safetensors_header(std::span<const std::byte> bytes, std::uint64_t file_size,
                                           const std::string& name) {
    if (file_size < 8 || bytes.size() < 8) throw Error(name, "too small for a safetensors file (no 8-byte header length)");
    SafetensorsHeader h;
    h.header_size = le64(bytes.first(8));
    if (h.header_size > kMaxSafetensorsHeader)
        throw Error(name, "header length " + std::to_string(h.header_size) + " exceeds the 100 MB limit");
    if (8 + h.header_size > file_size)
        throw Error(name, "header length " + std::to_string(h.header_size) + " runs past the end of the file");
    if (bytes.size() < 8 + h.header_size) throw Error(name, "need " + std::to_string(8 + h.header_size) + " header bytes");
    const std::string_view text(reinterpret_cast<const char*>(bytes.data() + 8), h.header_size);
    if (text.empty() || text.front() != '{') throw Error(name, "header does not start with '{'");
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);  // trailing spaces are whitespace to the parser
    } catch (const nlohmann::json::exception& e) {
        throw Error(name, std::string("header is not valid JSON: ") + e.what());
    }
    if (!j.is_object()) throw Error(name, "header is not a JSON object");
    for (const auto& item : j.items()) {
        // Not a structured binding: clang before 16 cannot capture one in the lambda below.
        const std::string& key = item.key();
        const nlohmann::json& value = item.value();
        if (key == "__metadata__") {
            if (!value.is_object()) throw Error(name, "__metadata__ is not an object");
            for (const auto& [k, v] : value.items()) {
                if (!v.is_string()) throw Error(name, "__metadata__ value of '" + k + "' is not a string");
                h.metadata[k] = v.get<std::string>();
            }
            continue;
        }
        const auto bad = [&](const std::string& what) { return Error(name, "tensor '" + key + "': " + what); };
        if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") || !value.contains("data_offsets"))
            throw bad("needs dtype, shape and data_offsets");
        SafetensorsEntry t;
        t.name = key;
        if (!value["dtype"].is_string()) throw bad("dtype is not a string");
        const auto dt = dtype_from_safetensors_name(value["dtype"].get<std::string>());
        if (!dt) throw bad("unknown dtype '" + value["dtype"].get<std::string>() + "'");
        t.dtype = *dt;
        const auto& shape = value["shape"];
        const auto& off = value["data_offsets"];
        if (!shape.is_array()) throw bad("shape is not an array");
        for (const auto& d : shape) {
            if (!d.is_number_unsigned()) throw bad("shape holds a value that is not a non-negative integer");
            t.shape.push_back(d.get<std::uint64_t>());
        }
        if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
            throw bad("data_offsets is not a pair of non-negative integers");
        t.begin = off[0].get<std::uint64_t>();
        t.end = off[1].get<std::uint64_t>();
        h.tensors.push_back(std::move(t));
    }
    validate(h, file_size, name);
    return h;
}

SafetensorsHeader read_safetensors_header(const File& file) {
    const std::uint64_t size = file.size();
    std::vector<std::byte> prefix(std::min<std::uint64_t>(size, 8));
    file.read_at(0, prefix);
    if (prefix.size() < 8) return parse_safetensors_header(prefix, size, file.path());
    const std::uint64_t n = std::min(le64(prefix), kMaxSafetensorsHeader + 1);
    if (8 + n > size) return parse_safetensors_header(prefix, size, file.path());
    std::vector<std::byte> bytes(8 + n);
    file.read_at(0, bytes);
    return parse_safetensors_header(bytes, size, file.path());
}

}  // namespace m2h::io
