#include "plan/safetensors_layout.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <string_view>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "common/error.hpp"

namespace m2h::plan {
namespace {

// The reference reader rejects a header that is not UTF-8, and nlohmann throws on such a key when the index is
// dumped, so a bad name must fail here with its own message rather than later with a confusing one.
bool valid_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        std::size_t len;
        std::uint32_t cp;
        if (c < 0x80) { ++i; continue; }
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
        else return false;
        if (i + len > s.size()) return false;
        for (std::size_t k = 1; k < len; ++k) {
            const auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

// serde_json's compact string escaping, so that our headers match the reference writer byte for byte: only the quote,
// the backslash and control characters are escaped; everything else (DEL and non-ASCII included) is written raw.
void append_json_string(std::string& out, std::string_view s) {
    static constexpr char kHex[] = "0123456789abcdef";
    out += '"';
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (c < 0x20) {
                out += "\\u00";
                out += kHex[c >> 4];
                out += kHex[c & 0xF];
            } else {
                out += ch;
            }
        }
    }
    out += '"';
}

std::string shard_file_name(std::size_t index, std::size_t count) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", index + 1, count);
    return buf;
}

// Orders one file's tensors as safetensors' prepare() does, lays their data out back to back, and renders the header.
void build_file(const std::vector<tensors::OutputTensor>& tensors, const std::vector<std::uint64_t>& sizes, OutputFile& file,
                std::size_t file_index, std::vector<TensorPlacement>& placement) {
    std::sort(file.tensors.begin(), file.tensors.end(), [&](std::size_t a, std::size_t b) {
        if (tensors[a].dtype != tensors[b].dtype) return tensors[a].dtype > tensors[b].dtype;
        return tensors[a].name < tensors[b].name;  // std::string compares as unsigned char: byte-wise, like Rust
    });

    std::string json = R"({"__metadata__":{"format":"pt"})";
    std::vector<std::uint64_t> data_offset(file.tensors.size());
    std::uint64_t cursor = 0;
    for (std::size_t k = 0; k < file.tensors.size(); ++k) {
        const tensors::OutputTensor& t = tensors[file.tensors[k]];
        const std::uint64_t begin = cursor;
        cursor += sizes[file.tensors[k]];  // cannot overflow: the total was checked by the caller
        data_offset[k] = begin;
        json += ',';
        append_json_string(json, t.name);
        json += R"(:{"dtype":")";
        json += safetensors_name(t.dtype);
        json += R"(","shape":[)";
        for (std::size_t d = 0; d < t.shape.size(); ++d) {
            if (d) json += ',';
            json += std::to_string(t.shape[d]);
        }
        json += R"(],"data_offsets":[)";
        json += std::to_string(begin);
        json += ',';
        json += std::to_string(cursor);
        json += "]}";
    }
    json += '}';
    json.append((8 - json.size() % 8) % 8, ' ');

    std::string header(8, '\0');
    std::uint64_t n = json.size();
    for (int b = 0; b < 8; ++b) header[b] = static_cast<char>((n >> (8 * b)) & 0xFF);
    header += json;
    file.header = std::move(header);
    file.size = file.header.size() + cursor;
    for (std::size_t k = 0; k < file.tensors.size(); ++k)
        placement[file.tensors[k]] = TensorPlacement{file_index, file.header.size() + data_offset[k]};
}

}  // namespace

OutputLayout layout_safetensors(const std::vector<tensors::OutputTensor>& tensors, std::uint64_t max_shard_size) {
    if (max_shard_size == 0) throw Error("", "maximum shard size must be positive");
    if (tensors.empty()) throw Error("", "no tensors to write");

    std::unordered_set<std::string_view> seen;
    std::vector<std::uint64_t> sizes(tensors.size());
    OutputLayout layout;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        const tensors::OutputTensor& t = tensors[i];
        if (t.name.empty()) throw Error("", "empty tensor name");
        // The reader would take it for the metadata entry and fail to parse it as a string map.
        if (t.name == "__metadata__") throw Error(t.name, "reserved tensor name");
        if (!valid_utf8(t.name)) throw Error(t.name, "tensor name is not valid UTF-8");
        if (!seen.insert(t.name).second) throw Error(t.name, "duplicate tensor name");
        sizes[i] = t.nbytes();
        if (__builtin_add_overflow(layout.total_size, sizes[i], &layout.total_size))
            throw Error("", "total tensor size overflows 64 bits");
    }

    // huggingface_hub's split_state_dict_into_shards_factory, without shared storage (every tensor owns its bytes).
    std::vector<std::vector<std::size_t>> shards;
    std::vector<std::size_t> current;
    std::uint64_t current_size = 0;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        if (sizes[i] > max_shard_size) {
            // Appended at once while `current` stays open: that is why shard numbers can run out of state-dict order.
            shards.push_back({i});
            continue;
        }
        // `current_size + size > max`, written so it cannot wrap.
        if (sizes[i] > max_shard_size - current_size) {
            shards.push_back(std::move(current));
            current.clear();
            current_size = 0;
        }
        current.push_back(i);
        current_size += sizes[i];
    }
    if (!current.empty()) shards.push_back(std::move(current));

    layout.placement.resize(tensors.size());
    layout.files.resize(shards.size());
    for (std::size_t s = 0; s < shards.size(); ++s) {
        OutputFile& f = layout.files[s];
        f.name = shards.size() == 1 ? "model.safetensors" : shard_file_name(s, shards.size());
        f.tensors = std::move(shards[s]);
        build_file(tensors, sizes, f, s, layout.placement);
    }

    if (layout.files.size() > 1) {
        // transformers writes json.dumps(index, indent=2, sort_keys=True) + "\n": ASCII-escaped, keys sorted by code
        // point, which for UTF-8 is byte order, which is what nlohmann's std::map gives.
        nlohmann::json weight_map = nlohmann::json::object();
        for (std::size_t i = 0; i < tensors.size(); ++i)
            weight_map[tensors[i].name] = layout.files[layout.placement[i].file].name;
        nlohmann::json index = {{"metadata", {{"total_size", layout.total_size}}}, {"weight_map", std::move(weight_map)}};
        layout.index_json = index.dump(2, ' ', true) + "\n";
    }
    return layout;
}

}  // namespace m2h::plan
