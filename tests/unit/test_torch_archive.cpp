#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "formats/torch_archive.hpp"
#include "io/byte_source.hpp"
#include "io/file.hpp"
#include "torch_test_util.hpp"

using m2h::DType;
using m2h::Error;
using m2h::formats::TensorLocation;
using m2h::formats::TorchArchive;
using m2h::io::ByteSource;
using m2h::io::FileRegion;
using m2h::io::MemorySource;
using namespace m2h::pickle;
using namespace m2h::testutil;

namespace {

std::string hex_of(const ByteSource& src, const TensorLocation& loc) {
    std::vector<std::byte> buf(loc.nbytes);
    src.read(loc.offset, buf);
    static const char* digits = "0123456789abcdef";
    std::string h;
    for (auto b : buf) {
        h.push_back(digits[static_cast<unsigned>(b) >> 4]);
        h.push_back(digits[static_cast<unsigned>(b) & 15]);
    }
    return h;
}

ValuePtr navigate(ValuePtr v, const nlohmann::json& path) {
    for (const auto& step : path) {
        if (!v) return nullptr;
        if (step.is_string()) {
            v = get(*v, step.get<std::string>());
        } else {
            const auto i = step.get<std::size_t>();
            const std::vector<ValuePtr>* items = nullptr;
            if (const auto* l = v->as<List>()) items = &l->items;
            else if (const auto* t = v->as<Tuple>()) items = &t->items;
            if (items == nullptr || i >= items->size()) return nullptr;
            v = (*items)[i];
        }
    }
    return v;
}

std::string path_name(const nlohmann::json& path) {
    std::string s;
    for (const auto& step : path) s += (s.empty() ? "" : ".") + (step.is_string() ? step.get<std::string>() : step.dump());
    return s;
}

// Checks every tensor the sidecar lists for `info` against the archive in `src`; returns how many.
std::size_t check_tensors(const ByteSource& src, const nlohmann::json& info) {
    TorchArchive a(src);
    EXPECT_EQ(a.zip().prefix(), info["prefix"].get<std::string>());
    const auto root = a.load();
    std::size_t n = 0;
    for (const auto& t : info["tensors"]) {
        const auto name = path_name(t["path"]);
        SCOPED_TRACE(name);
        const auto v = navigate(root, t["path"]);
        if (!v) {
            ADD_FAILURE() << "not found";
            continue;
        }
        const auto* tr = v->as<TensorRef>();
        if (tr == nullptr) {
            ADD_FAILURE() << "not a tensor but " << v->kind();
            continue;
        }
        EXPECT_EQ(m2h::torch_name(tr->dtype), t["dtype"].get<std::string>());
        EXPECT_EQ(tr->size, t["shape"].get<std::vector<std::uint64_t>>());
        EXPECT_EQ(tr->stride, t["stride"].get<std::vector<std::uint64_t>>());
        EXPECT_EQ(tr->storage_offset, t["storage_offset"].get<std::uint64_t>());
        EXPECT_EQ(tr->storage.nbytes, t["storage_nbytes"].get<std::uint64_t>());
        const auto loc = a.tensor_location(*tr, name);
        const auto hex = t["hex"].get<std::string>();
        EXPECT_EQ(loc.nbytes * 2, hex.size());
        EXPECT_EQ(hex_of(src, loc), hex);
        ++n;
    }
    return n;
}

struct Samples {
    TempDir dir;
    nlohmann::json expected;
    Samples() {
        const int rc = run_samples(dir.path(), false);
        EXPECT_EQ(rc, 0) << "tests/fixtures/torch_save_samples.py failed";
        if (rc == 0) expected = nlohmann::json::parse(read_whole(dir.path() / "expected.json"));
    }
};

const ByteVec kFloats = to_bytes(std::string("\x00\x00\x80\x3f\x00\x00\x00\x40\x00\x00\x40\x40\x00\x00\x80\x40", 16));

MemorySource archive(const ByteVec& pkl, const std::vector<std::pair<std::string, std::string>>& storages,
                     std::string_view version = "3\n", std::string_view byteorder = "little") {
    return MemorySource(build_torch_archive(pkl, storages, "archive", version, byteorder), "test.pt");
}

ByteVec dict_of(const std::function<void(PickleBuilder&)>& items) {
    PickleBuilder p;
    p.proto(2).op('}').mark();
    items(p);
    return p.op('u').stop().done();
}

TensorRef tensor_at(const TorchArchive& a, const ValuePtr& root, std::string_view key) {
    const auto v = get(*root, key);
    if (!v || !v->is<TensorRef>()) throw std::runtime_error("no tensor " + std::string(key));
    return *v->as<TensorRef>();
}

std::string location_error(const TorchArchive& a, const TensorRef& t) {
    try {
        (void)a.tensor_location(t, "the.key");
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

std::string load_error(const MemorySource& src) {
    try {
        TorchArchive a(src);
        (void)a.load();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(TorchArchive, RealTorchSaveFilesMatchTorch) {
    Samples s;
    ASSERT_TRUE(s.expected.contains("files"));
    std::size_t checked = 0, listed = 0;
    for (const auto& [fname, info] : s.expected["files"].items()) {
        if (!info.contains("tensors")) continue;
        SCOPED_TRACE(fname);
        m2h::io::File f((s.dir.path() / fname).string(), m2h::io::File::Mode::Read);
        FileRegion region(f);
        checked += check_tensors(region, info);
        listed += info["tensors"].size();
    }
    EXPECT_EQ(checked, listed);
    EXPECT_GE(checked, 14u);  // 13 in megatron_like.pt, 1 in buffer.pt (+1 float8 where torch has it)

    // Everything else in the Megatron-shaped file.
    const auto& info = s.expected["files"]["megatron_like.pt"];
    m2h::io::File f((s.dir.path() / "megatron_like.pt").string(), m2h::io::File::Mode::Read);
    FileRegion region(f);
    TorchArchive a(region);
    const auto root = a.load();
    const auto args = get(*root, "args");
    ASSERT_TRUE(args);
    EXPECT_EQ(args->kind(), "object argparse.Namespace");
    for (const auto& [k, v] : info["args"].items()) {
        const auto got = get(*args, k);
        ASSERT_TRUE(got) << k;
        if (v.is_boolean()) EXPECT_EQ(*got->as<bool>(), v.get<bool>()) << k;
        else if (v.is_number_integer()) EXPECT_EQ(*got->as<std::int64_t>(), v.get<std::int64_t>()) << k;
        else if (v.is_number_float()) EXPECT_DOUBLE_EQ(*got->as<double>(), v.get<double>()) << k;
        else EXPECT_EQ(*got->as<std::string>(), v.get<std::string>()) << k;
    }
    EXPECT_EQ(*get(*args, "params_dtype")->as<DType>(), DType::BF16);
    EXPECT_TRUE(get(*args, "save")->is<None>());
    EXPECT_EQ(get(*args, "data_path")->as<List>()->items.size(), 2u);
    const auto shape = get(*args, "some_shape");
    ASSERT_TRUE(shape->is<Tuple>());
    EXPECT_EQ(*shape->as<Tuple>()->items[1]->as<std::int64_t>(), 3);
    EXPECT_EQ(*get(*root, "checkpoint_version")->as<double>(), 3.0);
    EXPECT_EQ(*get(*root, "iteration")->as<std::int64_t>(), 10);

    const auto* model = get(*root, "model")->as<Dict>();
    ASSERT_NE(model, nullptr);
    std::vector<std::string> keys;
    for (const auto& [k, v] : model->items) keys.push_back(*k->as<std::string>());
    EXPECT_EQ(keys, info["model_keys"].get<std::vector<std::string>>());
    EXPECT_TRUE(get(*get(*root, "model"), "decoder.layers.0.self_attention.linear_qkv._extra_state")->is<None>());

    const auto& shared = info["shared_storage"];
    const auto* t0 = navigate(root, shared[0])->as<TensorRef>();
    const auto* t1 = navigate(root, shared[1])->as<TensorRef>();
    ASSERT_TRUE(t0 && t1);
    EXPECT_EQ(t0->storage.key, t1->storage.key);
    EXPECT_EQ(t1->storage_offset, 6u);

    EXPECT_EQ(get(*root, "blob")->as<m2h::pickle::Bytes>()->data, std::string("\x00\x01\xfe\xff", 4));
    EXPECT_EQ(get(*root, "empty_blob")->as<m2h::pickle::Bytes>()->data, "");
    EXPECT_EQ(*get(*root, "path")->as<std::string>(), "/tmp/run/ckpt");
    EXPECT_EQ(*get(*get(*root, "ns"), "alpha")->as<std::int64_t>(), 1);
    EXPECT_EQ(get(*root, "fset")->as<Set>()->items.size(), 2u);
    EXPECT_EQ(get(*root, "device")->kind(), "object torch.device");
    EXPECT_EQ(*get(*root, "layout")->as<std::string>(), "torch.strided");
    const auto np_state = navigate(root, nlohmann::json::parse(R"(["rng_state", 0, "np_rng_state", 1])"));
    ASSERT_TRUE(np_state);
    EXPECT_EQ(np_state->kind(), "object numpy.core.multiarray._reconstruct");
}

TEST(TorchArchive, RealArchiveEmbeddedAtAnOddOffset) {
    Samples s;
    ASSERT_TRUE(s.expected.contains("files"));
    const auto bytes = to_bytes(read_whole(s.dir.path() / "megatron_like.pt"));
    const auto path = s.dir.path() / "container.bin";
    write_file(path, bytes, 43);
    m2h::io::File f(path.string(), m2h::io::File::Mode::Read);
    FileRegion region(f, 43, bytes.size());
    EXPECT_EQ(check_tensors(region, s.expected["files"]["megatron_like.pt"]), 13u);

    // Offsets are relative to the region; file_offset turns them into absolute ones.
    TorchArchive a(region);
    const auto root = a.load();
    const auto t = *get(*get(*root, "model"), "f32")->as<TensorRef>();
    const auto loc = a.tensor_location(t, "f32");
    std::vector<std::byte> direct(loc.nbytes);
    f.read_at(*region.file_offset(loc.offset), direct);
    EXPECT_EQ(as_string(direct), std::string("\x00\x00\xc0\x3f\x00\x00\x00\xc0", 8));
}

TEST(TorchArchive, RealNonContiguousTensorsAreRefused) {
    Samples s;
    ASSERT_TRUE(s.expected.contains("files"));
    const auto& info = s.expected["files"]["noncontig.pt"];
    m2h::io::File f((s.dir.path() / "noncontig.pt").string(), m2h::io::File::Mode::Read);
    FileRegion region(f);
    TorchArchive a(region);
    EXPECT_EQ(a.zip().prefix(), "noncontig");
    const auto root = a.load();
    std::size_t refused = 0;
    for (const auto& key : info["refuse"]) {
        const auto k = key.get<std::string>();
        const auto t = tensor_at(a, root, k);
        try {
            (void)a.tensor_location(t, k);
            ADD_FAILURE() << k << " was accepted";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("contiguous"), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find(k), std::string::npos) << e.what();
            ++refused;
        }
    }
    EXPECT_EQ(refused, 2u);
}

TEST(TorchArchive, Float8ThroughRebuildTensorV3) {
    const auto src = archive(dict_of([](PickleBuilder& p) {
                                 p.str("f8").tensor_v3("float8_e4m3fn", "0", 4, 1, {3}, {1});
                                 p.str("u16").tensor_v3("uint16", "1", 4, 0, {2}, {1});
                             }),
                             {{"0", "\x01\x02\x03\x04"}, {"1", "\x05\x06\x07\x08"}});
    TorchArchive a(src);
    const auto root = a.load();
    const auto f8 = tensor_at(a, root, "f8");
    EXPECT_EQ(f8.dtype, DType::F8_E4M3);
    EXPECT_EQ(hex_of(src, a.tensor_location(f8, "f8")), "020304");
    const auto u16 = tensor_at(a, root, "u16");
    EXPECT_EQ(u16.dtype, DType::U16);
    EXPECT_EQ(hex_of(src, a.tensor_location(u16, "u16")), "05060708");
}

TEST(TorchArchive, ByteOrder) {
    const auto pkl = dict_of([](PickleBuilder& p) { p.str("w").tensor_v2("FloatStorage", "0", 4, 0, {4}, {1}); });
    {
        const auto src = archive(pkl, {{"0", as_string(kFloats)}}, "3\n", "big");
        TorchArchive a(src);
        const auto root = a.load();
        EXPECT_NE(location_error(a, tensor_at(a, root, "w")).find("big-endian"), std::string::npos);
    }
    {
        const auto src = archive(pkl, {{"0", as_string(kFloats)}}, "3\n", "");  // absent: little
        TorchArchive a(src);
        EXPECT_EQ(a.tensor_location(tensor_at(a, a.load(), "w"), "w").nbytes, 16u);
    }
    EXPECT_NE(load_error(archive(pkl, {{"0", as_string(kFloats)}}, "3\n", "middle")).find("byteorder"), std::string::npos);
}

TEST(TorchArchive, VersionRecord) {
    const auto pkl = dict_of([](PickleBuilder&) {});
    EXPECT_EQ(load_error(archive(pkl, {}, "1")), "");
    EXPECT_EQ(load_error(archive(pkl, {}, "10\n")), "");
    EXPECT_NE(load_error(archive(pkl, {}, "11\n")).find("version 11"), std::string::npos);
    EXPECT_NE(load_error(archive(pkl, {}, "0\n")).find("version 0"), std::string::npos);
    EXPECT_NE(load_error(archive(pkl, {}, "three")).find("version"), std::string::npos);
    EXPECT_NE(load_error(archive(pkl, {}, "")).find("no version"), std::string::npos);
    const MemorySource ts(build_zip({{"m/data.pkl", as_string(pkl)}, {"m/.data/version", "6\n"}}), "ts.pt");
    EXPECT_EQ(load_error(ts), "");
}

TEST(TorchArchive, NotATorchArchive) {
    const MemorySource src(build_zip({{"archive/version", "3\n"}}), "x.pt");
    EXPECT_NE(load_error(src).find("data.pkl"), std::string::npos);
}

TEST(TorchArchive, StorageRecordsAreChecked) {
    const auto pkl = [](std::string_view cls, std::int64_t numel) {
        return dict_of([=](PickleBuilder& p) { p.str("w").tensor_v2(cls, "0", numel, 0, {1}, {1}); });
    };
    EXPECT_EQ(load_error(archive(pkl("FloatStorage", 4), {{"0", as_string(kFloats)}})), "");
    EXPECT_NE(load_error(archive(pkl("FloatStorage", 3), {{"0", as_string(kFloats)}})).find("holds 16 bytes"),
              std::string::npos);
    EXPECT_NE(load_error(archive(pkl("FloatStorage", 4), {})).find("missing"), std::string::npos);
    EXPECT_NE(load_error(archive(pkl("QInt8Storage", 16), {{"0", as_string(kFloats)}})).find("quantized"),
              std::string::npos);
    EXPECT_NE(load_error(archive(pkl("ComplexDoubleStorage", 1), {{"0", as_string(kFloats)}})).find("unsupported"),
              std::string::npos);
    EXPECT_EQ(load_error(archive(pkl("UntypedStorage", 16), {{"0", as_string(kFloats)}})), "");
    // The same key described two ways.
    const auto twice = dict_of([](PickleBuilder& p) {
        p.str("a").tensor_v2("FloatStorage", "0", 4, 0, {1}, {1});
        p.str("b").tensor_v2("IntStorage", "0", 4, 0, {1}, {1});
    });
    EXPECT_NE(load_error(archive(twice, {{"0", as_string(kFloats)}})).find("two different ways"), std::string::npos);
    // A persistent id that is not a storage.
    const auto blob = dict_of([](PickleBuilder& p) {
        p.str("a").mark().str("blob").global("torch", "FloatStorage").str("0").str("cpu").integer(4).op('t').op('Q');
    });
    EXPECT_NE(load_error(archive(blob, {{"0", as_string(kFloats)}})).find("'storage'"), std::string::npos);
    // Errors inside data.pkl name the record.
    ByteVec broken = dict_of([](PickleBuilder& p) { p.str("a"); });
    broken.pop_back();
    EXPECT_NE(load_error(archive(broken, {})).find("archive/data.pkl"), std::string::npos);
}

TEST(TorchArchive, TensorLocationChecks) {
    const auto src = archive(dict_of([](PickleBuilder& p) {
                                 p.str("all").tensor_v2("FloatStorage", "0", 4, 0, {2, 2}, {2, 1});
                                 p.str("tail").tensor_v2("FloatStorage", "0", 4, 2, {2}, {1});
                                 p.str("past").tensor_v2("FloatStorage", "0", 4, 2, {3}, {1});
                                 p.str("cols").tensor_v2("FloatStorage", "0", 4, 0, {2, 2}, {1, 2});
                                 p.str("ones").tensor_v2("FloatStorage", "0", 4, 1, {1, 3}, {99, 1});
                                 p.str("ones2").tensor_v2("FloatStorage", "0", 4, 0, {3, 1}, {1, 7});
                                 p.str("empty").tensor_v2("FloatStorage", "0", 4, 0, {0, 4}, {4, 1});
                                 p.str("none").tensor_v2("FloatStorage", "1", 0, 0, {0}, {1});
                                 p.str("scalar").tensor_v2("FloatStorage", "0", 4, 3, {}, {});
                                 p.str("i32").tensor_v3("int32", "0", 4, 0, {4}, {1}, "FloatStorage");
                                 p.str("f32v3").tensor_v3("float32", "0", 4, 0, {4}, {1}, "FloatStorage");
                                 p.str("huge").tensor_v2("FloatStorage", "0", 4, 0, {INT64_MAX, 4}, {4, 1});
                                 p.str("far").tensor_v2("FloatStorage", "0", 4, INT64_MAX, {1}, {1});
                             }),
                             {{"0", as_string(kFloats)}, {"1", ""}});
    TorchArchive a(src);
    const auto root = a.load();
    const auto loc = [&](std::string_view k) { return a.tensor_location(tensor_at(a, root, k), std::string(k)); };
    EXPECT_EQ(hex_of(src, loc("all")), "0000803f000000400000404000008040");
    EXPECT_EQ(hex_of(src, loc("tail")), "0000404000008040");
    EXPECT_EQ(loc("tail").offset, loc("all").offset + 8);
    EXPECT_NE(location_error(a, tensor_at(a, root, "past")).find("past the end"), std::string::npos);
    EXPECT_NE(location_error(a, tensor_at(a, root, "cols")).find("contiguous"), std::string::npos);
    EXPECT_NE(location_error(a, tensor_at(a, root, "cols")).find("the.key"), std::string::npos);
    EXPECT_EQ(hex_of(src, loc("ones")), "000000400000404000008040");
    EXPECT_EQ(loc("ones2").nbytes, 12u);
    EXPECT_EQ(loc("empty").nbytes, 0u);
    EXPECT_EQ(loc("none").nbytes, 0u);
    EXPECT_EQ(hex_of(src, loc("scalar")), "00008040");
    EXPECT_NE(location_error(a, tensor_at(a, root, "i32")).find("differs"), std::string::npos);
    EXPECT_EQ(loc("f32v3").nbytes, 16u);
    EXPECT_NE(location_error(a, tensor_at(a, root, "huge")), "");
    EXPECT_NE(location_error(a, tensor_at(a, root, "far")), "");
}
