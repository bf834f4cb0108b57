#pragma once
// Test helpers shared by the zip / pickle / torch archive tests: a tiny zip writer that lays records out
// the way torch.save does (FB padding, data descriptors, ZIP64 trailer), a pickle byte builder, a
// temporary directory, and the runner for tests/fixtures/torch_save_samples.py.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace m2h::testutil {

using ByteVec = std::vector<std::byte>;

inline ByteVec to_bytes(std::string_view s) {
    ByteVec b(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) b[i] = static_cast<std::byte>(static_cast<unsigned char>(s[i]));
    return b;
}

inline void put_le(ByteVec& b, std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) b.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
}
inline void put_str(ByteVec& b, std::string_view s) {
    for (char c : s) b.push_back(static_cast<std::byte>(static_cast<unsigned char>(c)));
}

struct ZipEntrySpec {
    std::string name;
    std::string data;
    std::uint16_t method = 0;
};

struct ZipOptions {
    bool zip64 = true;            // write the ZIP64 end record and locator (torch always does)
    bool saturate_eocd = false;   // EOCD fields set to 0xFFFF/0xFFFFFFFF; only the ZIP64 record is true
    bool saturate_sizes = false;  // central-directory sizes in the ZIP64 extra
    bool saturate_offset = false; // central-directory local header offset in the ZIP64 extra
    bool omit_zip64_extra = false;  // saturate but forget the extra (corrupt)
    std::uint64_t alignment = 64;
    std::string comment;
};

// Writes an archive laid out like caffe2's PyTorchStreamWriter output.
inline ByteVec build_zip(const std::vector<ZipEntrySpec>& entries, const ZipOptions& o = {}) {
    ByteVec out;
    std::vector<std::uint64_t> offsets;
    for (const auto& e : entries) {
        offsets.push_back(out.size());
        const std::uint64_t start = out.size() + 30 + e.name.size() + 4;
        const std::uint64_t pad = (o.alignment - start % o.alignment) % o.alignment;
        put_le(out, 0x04034B50, 4);
        put_le(out, 0, 2);
        put_le(out, 0x0808, 2);
        put_le(out, e.method, 2);
        put_le(out, 0, 4);   // time, date
        put_le(out, 0, 4);   // crc (in the descriptor)
        put_le(out, 0, 4);   // csize
        put_le(out, 0, 4);   // usize
        put_le(out, e.name.size(), 2);
        put_le(out, 4 + pad, 2);
        put_str(out, e.name);
        put_str(out, "FB");
        put_le(out, pad, 2);
        put_str(out, std::string(pad, 'Z'));
        put_str(out, e.data);
        put_le(out, 0x08074B50, 4);
        put_le(out, 0, 4);
        put_le(out, e.data.size(), 4);
        put_le(out, e.data.size(), 4);
    }
    const std::uint64_t cd_offset = out.size();
    for (std::size_t i = 0; i < entries.size(); ++i) {
        const auto& e = entries[i];
        ByteVec extra;
        if (!o.omit_zip64_extra && (o.saturate_sizes || o.saturate_offset)) {
            ByteVec vals;
            if (o.saturate_sizes) {
                put_le(vals, e.data.size(), 8);
                put_le(vals, e.data.size(), 8);
            }
            if (o.saturate_offset) put_le(vals, offsets[i], 8);
            put_le(extra, 0x0001, 2);
            put_le(extra, vals.size(), 2);
            extra.insert(extra.end(), vals.begin(), vals.end());
        }
        put_le(out, 0x02014B50, 4);
        put_le(out, 0x031E, 2);
        put_le(out, 0x002D, 2);
        put_le(out, 0x0808, 2);
        put_le(out, e.method, 2);
        put_le(out, 0, 4);
        put_le(out, 0, 4);  // crc: not checked by the reader
        put_le(out, o.saturate_sizes ? 0xFFFFFFFF : e.data.size(), 4);
        put_le(out, o.saturate_sizes ? 0xFFFFFFFF : e.data.size(), 4);
        put_le(out, e.name.size(), 2);
        put_le(out, extra.size(), 2);
        put_le(out, 0, 2);
        put_le(out, 0, 2);
        put_le(out, 0, 2);
        put_le(out, 0, 4);
        put_le(out, o.saturate_offset ? 0xFFFFFFFF : offsets[i], 4);
        put_str(out, e.name);
        out.insert(out.end(), extra.begin(), extra.end());
    }
    const std::uint64_t cd_size = out.size() - cd_offset;
    if (o.zip64) {
        const std::uint64_t z = out.size();
        put_le(out, 0x06064B50, 4);
        put_le(out, 44, 8);
        put_le(out, 0x031E, 2);
        put_le(out, 0x002D, 2);
        put_le(out, 0, 4);
        put_le(out, 0, 4);
        put_le(out, entries.size(), 8);
        put_le(out, entries.size(), 8);
        put_le(out, cd_size, 8);
        put_le(out, cd_offset, 8);
        put_le(out, 0x07064B50, 4);
        put_le(out, 0, 4);
        put_le(out, z, 8);
        put_le(out, 1, 4);
    }
    put_le(out, 0x06054B50, 4);
    put_le(out, 0, 2);
    put_le(out, 0, 2);
    put_le(out, o.saturate_eocd ? 0xFFFF : entries.size(), 2);
    put_le(out, o.saturate_eocd ? 0xFFFF : entries.size(), 2);
    put_le(out, o.saturate_eocd ? 0xFFFFFFFF : cd_size, 4);
    put_le(out, o.saturate_eocd ? 0xFFFFFFFF : cd_offset, 4);
    put_le(out, o.comment.size(), 2);
    put_str(out, o.comment);
    return out;
}

// Builds pickle bytes opcode by opcode.
class PickleBuilder {
public:
    PickleBuilder& op(std::uint8_t b) { b_.push_back(static_cast<std::byte>(b)); return *this; }
    PickleBuilder& ops(std::initializer_list<int> bs) { for (int b : bs) op(static_cast<std::uint8_t>(b)); return *this; }
    PickleBuilder& le(std::uint64_t v, int n) { put_le(b_, v, n); return *this; }
    PickleBuilder& raw(std::string_view s) { put_str(b_, s); return *this; }
    PickleBuilder& proto(int p) { return op(0x80).op(static_cast<std::uint8_t>(p)); }
    PickleBuilder& mark() { return op('('); }
    PickleBuilder& stop() { return op('.'); }
    PickleBuilder& str(std::string_view s) { return op('X').le(s.size(), 4).raw(s); }        // BINUNICODE
    PickleBuilder& sstr(std::string_view s) { return op(0x8C).le(s.size(), 1).raw(s); }     // SHORT_BINUNICODE
    PickleBuilder& global(std::string_view m, std::string_view n) {
        return op('c').raw(m).raw("\n").raw(n).raw("\n");
    }
    PickleBuilder& integer(std::int64_t v) {
        if (v >= 0 && v < 256) return op('K').le(static_cast<std::uint64_t>(v), 1);
        if (v >= 0 && v < 65536) return op('M').le(static_cast<std::uint64_t>(v), 2);
        if (v >= INT32_MIN && v <= INT32_MAX) return op('J').le(static_cast<std::uint32_t>(static_cast<std::int32_t>(v)), 4);
        return op(0x8A).op(8).le(static_cast<std::uint64_t>(v), 8);
    }
    PickleBuilder& int_tuple(std::initializer_list<std::int64_t> vs) {
        mark();
        for (auto v : vs) integer(v);
        return op('t');
    }
    // The persistent id torch.save writes for a storage, then BINPERSID.
    PickleBuilder& storage(std::string_view cls, std::string_view key, std::int64_t numel, std::string_view loc = "cpu") {
        return mark().str("storage").global("torch", cls).str(key).str(loc).integer(numel).op('t').op('Q');
    }
    PickleBuilder& empty_ordered_dict() { return global("collections", "OrderedDict").op(')').op('R'); }
    // _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())
    PickleBuilder& tensor_v2(std::string_view cls, std::string_view key, std::int64_t numel, std::int64_t offset,
                             std::initializer_list<std::int64_t> size, std::initializer_list<std::int64_t> stride) {
        global("torch._utils", "_rebuild_tensor_v2").mark();
        storage(cls, key, numel).integer(offset).int_tuple(size).int_tuple(stride).op(0x89).empty_ordered_dict();
        return op('t').op('R');
    }
    // _rebuild_tensor_v3(untyped storage, offset, size, stride, False, OrderedDict(), torch.<dtype>)
    PickleBuilder& tensor_v3(std::string_view dtype, std::string_view key, std::int64_t nbytes, std::int64_t offset,
                             std::initializer_list<std::int64_t> size, std::initializer_list<std::int64_t> stride,
                             std::string_view storage_cls = "UntypedStorage") {
        global("torch._utils", "_rebuild_tensor_v3").mark();
        storage(storage_cls, key, nbytes).integer(offset).int_tuple(size).int_tuple(stride).op(0x89);
        empty_ordered_dict().global("torch", dtype);
        return op('t').op('R');
    }
    const ByteVec& bytes() const { return b_; }
    ByteVec done() { return b_; }

private:
    ByteVec b_;
};

inline std::string as_string(const ByteVec& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// A torch.save-shaped archive around a pickle and its storage records.
inline ByteVec build_torch_archive(const ByteVec& pkl, const std::vector<std::pair<std::string, std::string>>& storages,
                                 std::string_view prefix = "archive", std::string_view version = "3\n",
                                 std::string_view byteorder = "little") {
    std::vector<ZipEntrySpec> e;
    e.push_back({std::string(prefix) + "/data.pkl", as_string(pkl)});
    if (!byteorder.empty()) e.push_back({std::string(prefix) + "/byteorder", std::string(byteorder)});
    for (const auto& [k, v] : storages) e.push_back({std::string(prefix) + "/data/" + k, v});
    if (!version.empty()) e.push_back({std::string(prefix) + "/version", std::string(version)});
    return build_zip(e);
}

class TempDir {
public:
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "m2h_unit_XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

inline void write_file(const std::filesystem::path& p, const ByteVec& b, std::uint64_t at = 0, char fill = '\x5a') {
    std::ofstream f(p, std::ios::binary);
    const std::string lead(at, fill);
    f.write(lead.data(), static_cast<std::streamsize>(lead.size()));
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    f.write(lead.data(), static_cast<std::streamsize>(lead.size()));  // trailing junk too
}

inline std::string read_whole(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

// The repository root: M2H_SOURCE_DIR when ctest passes it, else derived from this header's own path
// (tests/unit/torch_test_util.hpp), so a mis-set environment still finds the fixtures instead of skipping.
inline std::filesystem::path source_dir() {
    if (const char* src = std::getenv("M2H_SOURCE_DIR"); src != nullptr && *src != '\0') return src;
    return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
}

// Runs tests/fixtures/torch_save_samples.py into `dir`; returns the exit status. Python must be
// available: a missing interpreter is a failure, never a skip.
inline int run_samples(const std::filesystem::path& dir, bool pickles_only) {
    const char* py = std::getenv("M2H_PYTHON");
    EXPECT_NE(py, nullptr) << "M2H_PYTHON is not set (ctest sets it)";
    if (py == nullptr) return -1;
    const auto script = source_dir() / "tests" / "fixtures" / "torch_save_samples.py";
    EXPECT_TRUE(std::filesystem::exists(script)) << script;
    const std::string cmd = std::string("'") + py + "' '" + script.string() + "' '" + dir.string() + "'" +
                            (pickles_only ? " --pickles-only" : "");
    return std::system(cmd.c_str());
}

}  // namespace m2h::testutil
