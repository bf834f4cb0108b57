// DCP (.metadata) interpretation, against real pickles written by Python's pickle with the real class paths
// (tests/fixtures/dcp_samples.py, which uses megatron_fixture.py's torch_dist writer), plus synthetic value
// trees for the chunk-coverage checks at scale.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "formats/dcp_metadata.hpp"
#include "pickle/pickle_machine.hpp"

using m2h::DType;
using m2h::Error;
using namespace m2h::formats;
namespace pk = m2h::pickle;
namespace fs = std::filesystem;

namespace {

fs::path source_root() {
    if (const char* src = std::getenv("M2H_SOURCE_DIR"); src != nullptr && *src != '\0') return src;
    return fs::path(__FILE__).parent_path().parent_path().parent_path();
}

std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

std::span<const std::byte> as_bytes(const std::string& s) {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// Runs dcp_samples.py once per suite (ctest runs each test in its own process, so tests are grouped to keep
// the number of Python runs small). Python must be there: a failure, never a skip.
template <bool MetaOnly> class SampleSuite : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        char tmpl[] = "/tmp/m2h_dcp_XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = new fs::path(tmpl);
        const char* py = std::getenv("M2H_PYTHON");
        const std::string python = py != nullptr && *py != '\0' ? py : "/usr/bin/python3";
        const auto script = source_root() / "tests" / "fixtures" / "dcp_samples.py";
        ASSERT_TRUE(fs::exists(script)) << script;
        const std::string cmd = "'" + python + "' '" + script.string() + "' '" + dir_->string() + "'" +
                                (MetaOnly ? " --meta-only" : "");
        ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
        expected_ = new nlohmann::json(nlohmann::json::parse(slurp(*dir_ / "expected.json")));
    }
    static void TearDownTestSuite() {
        if (dir_ != nullptr) {
            std::error_code ec;
            fs::remove_all(*dir_, ec);
        }
        delete dir_;
        delete expected_;
        dir_ = nullptr;
        expected_ = nullptr;
    }
    void SetUp() override { ASSERT_NE(expected_, nullptr) << "sample generation failed"; }

    static const fs::path& dir() { return *dir_; }
    static const nlohmann::json& expected() { return *expected_; }
    static pk::ValuePtr unpickle_file(const std::string& rel) {
        const auto bytes = slurp(dir() / rel / ".metadata");
        return pk::unpickle(as_bytes(bytes), rel, pk::PersistentLoad{});
    }

    static inline fs::path* dir_ = nullptr;
    static inline nlohmann::json* expected_ = nullptr;
};
using DcpSamples = SampleSuite<false>;     // small samples and complete checkpoints
using DcpMetaSamples = SampleSuite<true>;  // small samples only

void expect_storage(const DcpStorage& s, const nlohmann::json& e) {
    EXPECT_EQ(s.relative_path, e["path"].get<std::string>());
    EXPECT_EQ(s.offset, e["offset"].get<std::uint64_t>());
    EXPECT_EQ(s.length, e["length"].get<std::uint64_t>());
    EXPECT_EQ(s.transforms, e["transforms"].get<std::vector<std::string>>());
}

void expect_matches(const DcpMetadata& md, const nlohmann::json& e) {
    ASSERT_EQ(md.tensors.size(), e["tensors"].size());
    for (std::size_t i = 0; i < md.tensors.size(); ++i) {
        const auto& t = md.tensors[i];
        const auto& et = e["tensors"][i];
        SCOPED_TRACE(t.fqn);
        EXPECT_EQ(t.fqn, et["fqn"].get<std::string>());
        EXPECT_EQ(m2h::torch_name(t.dtype), et["dtype"].get<std::string>());
        EXPECT_EQ(t.size, et["size"].get<std::vector<std::uint64_t>>());
        ASSERT_EQ(t.chunks.size(), et["chunks"].size());
        for (std::size_t c = 0; c < t.chunks.size(); ++c) {
            EXPECT_EQ(t.chunks[c].offsets, et["chunks"][c]["offsets"].get<std::vector<std::uint64_t>>());
            EXPECT_EQ(t.chunks[c].sizes, et["chunks"][c]["sizes"].get<std::vector<std::uint64_t>>());
            expect_storage(t.chunks[c].storage, et["chunks"][c]);
        }
    }
    ASSERT_EQ(md.bytes.size(), e["bytes"].size());
    for (std::size_t i = 0; i < md.bytes.size(); ++i) {
        SCOPED_TRACE(md.bytes[i].fqn);
        EXPECT_EQ(md.bytes[i].fqn, e["bytes"][i]["fqn"].get<std::string>());
        expect_storage(md.bytes[i].storage, e["bytes"][i]);
    }
}

const DcpTensor* find_tensor(const DcpMetadata& md, const std::string& fqn) {
    for (const auto& t : md.tensors)
        if (t.fqn == fqn) return &t;
    return nullptr;
}

const pk::Value* attr(const pk::Value& v, std::string_view key) { return pk::get(v, key).get(); }

const pk::Object& object(const pk::Value* v) {
    static const pk::Object none{};
    if (v == nullptr || !v->is<pk::Object>()) {
        ADD_FAILURE() << "not an object: " << (v ? v->kind() : "null");
        return none;
    }
    return *v->as<pk::Object>();
}

// The first tensor's TensorProperties object and the first byte item's metadata object of a sample.
struct Parts {
    pk::ValuePtr root;
    const pk::Value* props = nullptr;
    const pk::Value* bytes_meta = nullptr;
    std::vector<const pk::Value*> storage_infos;
};

Parts parts(pk::ValuePtr root) {
    Parts p;
    p.root = root;
    const auto* sdm = attr(*root, "state_dict_metadata")->as<pk::Dict>();
    for (const auto& [k, v] : sdm->items) {
        const auto& o = object(v.get());
        if (o.cls.name == "TensorStorageMetadata" && p.props == nullptr) p.props = attr(*v, "properties");
        if (o.cls.name == "BytesStorageMetadata" && p.bytes_meta == nullptr) p.bytes_meta = v.get();
    }
    for (const auto& [k, v] : attr(*root, "storage_data")->as<pk::Dict>()->items) p.storage_infos.push_back(v.get());
    return p;
}

void check_encodings(const std::function<pk::ValuePtr(const std::string&)>& unpickle_file,
                     const std::function<std::string(const std::string&)>& raw) {
    {   // torch >= 2.3 class paths, enum by name through builtins.getattr, Path id, transforms on one entry
        const auto p = parts(unpickle_file("meta/small"));
        const auto& props = object(p.props);
        EXPECT_EQ(props.cls.module, "torch.distributed.checkpoint.metadata");
        const auto& state = props.state->as<pk::Tuple>()->items;
        ASSERT_EQ(state.size(), 5u);
        EXPECT_TRUE(state[0]->is<DType>());
        EXPECT_EQ(*state[1]->as<std::string>(), "torch.strided");  // _get_layout('torch.strided')
        EXPECT_EQ(object(state[3].get()).cls.qualified(), "builtins.getattr");
        ASSERT_NE(p.bytes_meta, nullptr);
        EXPECT_EQ(object(p.bytes_meta).state, nullptr);  // BytesStorageMetadata: NEWOBJ, no BUILD
        const auto* meta = attr(*p.root, "storage_meta");
        ASSERT_NE(meta, nullptr);
        EXPECT_EQ(*attr(*meta, "checkpoint_id")->as<std::string>(), "/ckpt/iter_0000001");  // PosixPath
        EXPECT_EQ(*attr(*p.root, "version")->as<std::string>(), "1.0.0");
        int with = 0, without = 0;
        for (const auto* info : p.storage_infos) (attr(*info, "transform_descriptors") ? with : without)++;
        EXPECT_EQ(with, 1);
        EXPECT_GT(without, 0);
    }
    {   // enum by value, protocol 5
        EXPECT_EQ(raw("meta/small_p5_value_enum")[1], '\x05');
        const auto p = parts(unpickle_file("meta/small_p5_value_enum"));
        const auto& e = object(object(p.props).state->as<pk::Tuple>()->items[3].get());
        EXPECT_EQ(e.cls.qualified(), "torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING");
        EXPECT_EQ(*e.args->as<pk::Tuple>()->items[0]->as<std::int64_t>(), 0);
    }
    {   // torch 2.0-2.2: _shard TensorProperties, 3-field Metadata, 6-element state
        const auto p = parts(unpickle_file("meta/small_torch20"));
        const auto& props = object(p.props);
        EXPECT_EQ(props.cls.module, "torch.distributed._shard.sharded_tensor.metadata");
        EXPECT_EQ(props.state->as<pk::Tuple>()->items.size(), 6u);
        EXPECT_EQ(object(props.state->as<pk::Tuple>()->items[3].get()).cls.name, "MEM_FORMAT_ENCODING");
        EXPECT_EQ(attr(*p.root, "storage_meta"), nullptr);
        EXPECT_EQ(attr(*p.root, "version"), nullptr);
    }
    {   // Megatron core 0.15 root, and core 0.8-0.14's extra attribute
        const auto a = unpickle_file("meta/small_mcore015");
        EXPECT_EQ(object(a.get()).cls.qualified(), "megatron.core.dist_checkpointing.strategies.torch.MCoreMetadata");
        EXPECT_NE(attr(*a, "mcore_data"), nullptr);
        const auto b = unpickle_file("meta/small_mcore_data");
        EXPECT_EQ(object(b.get()).cls.qualified(), "torch.distributed.checkpoint.metadata.Metadata");
        EXPECT_NE(attr(*b, "mcore_data"), nullptr);
        const auto c = unpickle_file("ckpt_mcore015/checkpoint_dist/iter_0000100");
        EXPECT_EQ(object(c.get()).cls.name, "MCoreMetadata");
        EXPECT_EQ(object(parts(c).props).state->as<pk::Tuple>()->items.size(), 6u);
        EXPECT_EQ(raw("ckpt_mcore015/checkpoint_dist/iter_0000100")[1], '\x05');
    }
}

void check_small_details(const fs::path& dir) {
    const auto md = read_dcp_metadata((dir / "meta/small").string());
    ASSERT_EQ(md.tensors.size(), 3u);
    const auto& w = md.tensors[0];
    EXPECT_EQ(w.dtype, DType::BF16);
    EXPECT_EQ(w.size, (std::vector<std::uint64_t>{2, 4, 3}));
    ASSERT_EQ(w.chunks.size(), 4u);
    EXPECT_EQ(w.chunks[1].storage.transforms, std::vector<std::string>{"stream.zstd/1"});
    EXPECT_EQ(w.chunks[2].storage.offset, std::uint64_t{1} << 33);  // LONG1 in the pickle
    EXPECT_EQ(w.chunks[2].storage.length, (std::uint64_t{1} << 31) + 5);
    EXPECT_EQ(md.tensors[1].fqn, "scalar");  // 0-d: one chunk with empty offsets
    EXPECT_TRUE(md.tensors[1].size.empty());
    ASSERT_EQ(md.tensors[1].chunks.size(), 1u);
    EXPECT_EQ(md.tensors[2].size, (std::vector<std::uint64_t>{0, 4}));  // empty tensor, empty chunk
    ASSERT_EQ(md.bytes.size(), 1u);
    EXPECT_EQ(md.bytes[0].storage.relative_path, "__0_1.distcp");
    const auto sub = read_dcp_metadata((dir / "meta/subdir_path").string());
    EXPECT_EQ(sub.tensors.at(0).chunks.at(0).storage.relative_path, "group_a/__0_0.distcp");
}

TEST_F(DcpSamples, ValidSamplesMatchWhatPythonLoads) {
    ASSERT_GE(expected()["valid"].size(), 11u);
    for (const auto& [rel, e] : expected()["valid"].items()) {
        SCOPED_TRACE(rel);
        DcpMetadata md;
        try {
            md = read_dcp_metadata((dir() / rel).string());
        } catch (const Error& err) {
            ADD_FAILURE() << err.what();
            continue;
        }
        expect_matches(md, e);
        // The root really is what the sample says, and parse_dcp_metadata on the same tree agrees.
        const auto root = unpickle_file(rel);
        EXPECT_EQ(object(root.get()).cls.name, e["root"].get<std::string>());
        const auto again = parse_dcp_metadata(*root, rel);
        EXPECT_EQ(again.tensors.size(), md.tensors.size());
    }
    {
        SCOPED_TRACE("encodings");
        check_encodings([](const std::string& rel) { return unpickle_file(rel); },
                        [](const std::string& rel) { return slurp(dir() / rel / ".metadata"); });
    }
    {
        SCOPED_TRACE("meta/small details");
        check_small_details(dir());
    }
}

// The complete checkpoints: Megatron's key naming and chunking, and every item's bytes inside its file.
TEST_F(DcpSamples, CheckpointsHaveMegatronChunking) {
    const std::string base = "checkpoint_dist/iter_0000100";
    {   // stacked keys, tp 2, L 2, H 32, F 64, Vp 128, opensci (tied, biases, qk-norm)
        const auto md = read_dcp_metadata((dir() / "ckpt_torch23" / base).string());
        const auto* fc1 = find_tensor(md, "decoder.layers.mlp.linear_fc1.weight");
        ASSERT_NE(fc1, nullptr);
        EXPECT_EQ(fc1->size, (std::vector<std::uint64_t>{2, 128, 32}));
        ASSERT_EQ(fc1->chunks.size(), 8u);  // L * t * (gate, up)
        std::map<std::vector<std::uint64_t>, int> at;
        for (const auto& c : fc1->chunks) {
            at[c.offsets]++;
            EXPECT_EQ(c.sizes, (std::vector<std::uint64_t>{1, 32, 32}));
        }
        for (std::uint64_t l = 0; l < 2; ++l)
            for (std::uint64_t row : {0, 32, 64, 96}) EXPECT_EQ((at[{l, row, 0}]), 1) << l << " " << row;
        const auto* proj = find_tensor(md, "decoder.layers.self_attention.linear_proj.weight");
        ASSERT_NE(proj, nullptr);
        EXPECT_EQ(proj->size, (std::vector<std::uint64_t>{2, 32, 32}));
        for (const auto& c : proj->chunks) EXPECT_EQ(c.sizes, (std::vector<std::uint64_t>{1, 32, 16}));
        const auto* norm = find_tensor(md, "decoder.layers.self_attention.linear_qkv.layer_norm_weight");
        ASSERT_NE(norm, nullptr);
        EXPECT_EQ(norm->chunks.size(), 2u);  // replicated: one chunk per layer
        const auto* bias = find_tensor(md, "decoder.layers.self_attention.linear_proj.bias");
        ASSERT_NE(bias, nullptr);
        EXPECT_EQ(bias->chunks.size(), 2u);
        const auto* emb = find_tensor(md, "embedding.word_embeddings.weight");
        ASSERT_NE(emb, nullptr);
        EXPECT_EQ(emb->chunks.size(), 2u);
        EXPECT_EQ(find_tensor(md, "output_layer.weight"), nullptr);  // tied
        EXPECT_NE(find_tensor(md, "optimizer.state.fp32_param.decoder.layers.mlp.linear_fc1.weight"), nullptr);
        EXPECT_EQ(find_tensor(md, "optimizer.state.exp_avg.embedding.word_embeddings.weight")->dtype, DType::F32);
        int extra = 0;
        for (const auto& b : md.bytes) extra += b.fqn.find("_extra_state/shard_") != std::string::npos;
        EXPECT_EQ(extra, 2 * 5);
    }
    {   // per-layer keys, common state inside DCP
        const auto md = read_dcp_metadata((dir() / "ckpt_mcore015" / base).string());
        EXPECT_NE(find_tensor(md, "decoder.layers.1.mlp.linear_fc1.weight"), nullptr);
        EXPECT_EQ(find_tensor(md, "decoder.layers.mlp.linear_fc1.weight"), nullptr);
        EXPECT_EQ(find_tensor(md, "decoder.layers.0.self_attention.linear_qkv.weight")->size.size(), 2u);
        EXPECT_TRUE(std::any_of(md.bytes.begin(), md.bytes.end(),
                                [](const auto& b) { return b.fqn == "common_state/shard_0_1"; }));
    }
    {   // untied llama: output layer present; zstd on tensor items when python3-zstandard is installed
        const auto md = read_dcp_metadata((dir() / "ckpt_mcore_data" / base).string());
        EXPECT_NE(find_tensor(md, "output_layer.weight"), nullptr);
        const bool zstd = expected()["zstd"].get<bool>();
        for (const auto& t : md.tensors)
            for (const auto& c : t.chunks)
                EXPECT_EQ(c.storage.transforms, zstd ? std::vector<std::string>{"stream.zstd/1"} : std::vector<std::string>{});
        for (const auto& b : md.bytes) EXPECT_TRUE(b.storage.transforms.empty());
    }
    // Every item lies inside its data file and starts like a torch.save zip (or a zstd frame).
    for (const char* ck : {"ckpt_torch23", "ckpt_torch20", "ckpt_mcore015", "ckpt_mcore_data"}) {
        SCOPED_TRACE(ck);
        const auto iter = dir() / ck / base;
        const auto md = read_dcp_metadata(iter.string());
        std::map<std::string, std::string> files;
        std::uint64_t tensor_bytes = 0, optimizer_bytes = 0;
        auto check = [&](const DcpStorage& s) {
            auto& data = files[s.relative_path];
            if (data.empty()) data = slurp(iter / s.relative_path);
            ASSERT_LE(s.offset + s.length, data.size()) << s.relative_path;
            const std::string head = data.substr(s.offset, 4);
            EXPECT_TRUE(head == std::string("PK\x03\x04", 4) || head == "\x28\xb5\x2f\xfd") << s.relative_path;
        };
        for (const auto& t : md.tensors) {
            std::uint64_t n = 1;
            for (auto d : t.size) n *= d;
            (t.fqn.starts_with("optimizer.") ? optimizer_bytes : tensor_bytes) += n * m2h::dtype_size(t.dtype);
            for (const auto& c : t.chunks) check(c.storage);
        }
        for (const auto& b : md.bytes) check(b.storage);
        EXPECT_GE(optimizer_bytes, 3 * tensor_bytes);
        EXPECT_GE(files.size(), 2u);
    }
}

TEST_F(DcpMetaSamples, InvalidSamplesAreErrors) {
    ASSERT_GE(expected()["invalid"].size(), 30u);
    for (const auto& [rel, err] : expected()["invalid"].items()) {
        SCOPED_TRACE(rel);
        const auto dir_path = (dir() / rel).string();
        try {
            read_dcp_metadata(dir_path);
            ADD_FAILURE() << "accepted";
        } catch (const Error& e) {
            const std::string what = e.what();
            EXPECT_NE(what.find(err.get<std::string>()), std::string::npos) << what;
            EXPECT_NE(what.find(dir_path), std::string::npos) << what;  // names the file
        } catch (const std::exception& e) {
            ADD_FAILURE() << "not an m2h::Error: " << e.what();
        }
    }
}

TEST(DcpMetadataFile, MissingFileIsAnError) {
    EXPECT_THROW(read_dcp_metadata("/nonexistent/m2h/iter_0000001"), Error);
}

// Every prefix of a small .metadata, and every single-byte corruption of it: an Error or a result, never a
// crash or another exception.
TEST_F(DcpMetaSamples, TruncatedAndCorruptedMetadata) {
    const std::string rel = "meta/small";
    const std::string bytes = slurp(dir() / rel / ".metadata");
    ASSERT_GT(bytes.size(), 200u);
    const auto attempt = [&](const std::string& data) -> int {  // 0 parsed, 1 Error
        try {
            const auto root = pk::unpickle(as_bytes(data), rel, pk::PersistentLoad{});
            parse_dcp_metadata(*root, rel);
            return 0;
        } catch (const Error&) {
            return 1;
        } catch (const std::exception& e) {
            ADD_FAILURE() << "not an m2h::Error: " << e.what();
            return 2;
        }
    };
    for (std::size_t n = 0; n < bytes.size(); ++n) EXPECT_EQ(attempt(bytes.substr(0, n)), 1) << "prefix " << n;
    EXPECT_EQ(attempt(bytes), 0);
    for (std::size_t n : {std::size_t{1}, bytes.size() / 2, bytes.size() - 1}) {
        const auto d = dir() / ("truncated_" + std::to_string(n));
        fs::create_directories(d);
        std::ofstream(d / ".metadata", std::ios::binary) << bytes.substr(0, n);
        EXPECT_THROW(read_dcp_metadata(d.string()), Error) << n;
    }
    int parsed = 0;
    for (std::size_t i = 0; i < bytes.size(); ++i)
        for (const unsigned char v : {static_cast<unsigned char>(0x00), static_cast<unsigned char>(0xFF),
                                      static_cast<unsigned char>(static_cast<unsigned char>(bytes[i]) ^ 0x01)}) {
            std::string corrupt = bytes;
            corrupt[i] = static_cast<char>(v);
            parsed += attempt(corrupt) == 0;
        }
    EXPECT_GT(parsed, 0);  // some flips only change data (a digit of a length, a character of a name)
}

// ---- synthetic value trees: the coverage check at scale and on awkward tilings ----

pk::ValuePtr str(std::string s) { return pk::make(std::move(s)); }
pk::ValuePtr dims(const std::vector<std::uint64_t>& v) {
    pk::Tuple t;
    for (auto x : v) t.items.push_back(pk::make(static_cast<std::int64_t>(x)));
    return pk::make(std::move(t));
}
pk::ValuePtr obj(std::string module, std::string name, pk::ValuePtr state) {
    pk::Object o;
    o.cls = pk::ClassRef{std::move(module), std::move(name)};
    o.args = pk::make(pk::Tuple{});
    o.state = std::move(state);
    return pk::make(std::move(o));
}
pk::ValuePtr dict(std::vector<std::pair<std::string, pk::ValuePtr>> kv) {
    pk::Dict d;
    for (auto& [k, v] : kv) d.items.emplace_back(str(k), std::move(v));
    return pk::make(std::move(d));
}
const std::string kMeta = "torch.distributed.checkpoint.metadata";

struct Box {
    std::vector<std::uint64_t> off, len;
};

pk::ValuePtr metadata_with(const std::vector<std::uint64_t>& size, const std::vector<Box>& boxes) {
    pk::Tuple props;
    props.items = {pk::make(DType::BF16), str("torch.strided"), pk::make(false),
                   obj(kMeta, "_MEM_FORMAT_ENCODING", nullptr), pk::make(false)};
    pk::List chunks;
    pk::Dict storage;
    std::int64_t pos = 0;
    for (const auto& b : boxes) {
        chunks.items.push_back(obj(kMeta, "ChunkStorageMetadata", dict({{"offsets", dims(b.off)}, {"sizes", dims(b.len)}})));
        storage.items.emplace_back(
            obj(kMeta, "MetadataIndex", dict({{"fqn", str("t")}, {"index", pk::make(pk::None{})}, {"offset", dims(b.off)}})),
            obj("torch.distributed.checkpoint.filesystem", "_StorageInfo",
                dict({{"relative_path", str("__0_0.distcp")}, {"offset", pk::make(pos)}, {"length", pk::make(std::int64_t{10})}})));
        pos += 10;
    }
    auto tsm = obj(kMeta, "TensorStorageMetadata",
                   dict({{"properties", obj(kMeta, "TensorProperties", pk::make(std::move(props)))},
                         {"size", dims(size)},
                         {"chunks", pk::make(std::move(chunks))}}));
    return obj(kMeta, "Metadata",
               dict({{"state_dict_metadata", dict({{"t", tsm}})},
                     {"planner_data", pk::make(pk::None{})},
                     {"storage_data", pk::make(std::move(storage))}}));
}

std::string coverage_error(const std::vector<std::uint64_t>& size, std::vector<Box> boxes, unsigned seed = 1) {
    std::shuffle(boxes.begin(), boxes.end(), std::mt19937(seed));
    try {
        const auto md = parse_dcp_metadata(*metadata_with(size, boxes), "synthetic");
        EXPECT_EQ(md.tensors.at(0).chunks.size(), boxes.size());
        return "";
    } catch (const Error& e) {
        return e.what();
    }
}

TEST(DcpMetadataCoverage, LargeTilings) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<Box> row;  // 1-D, 16384 chunks
    for (std::uint64_t i = 0; i < 16384; ++i) row.push_back({{i * 3}, {3}});
    EXPECT_EQ(coverage_error({16384 * 3}, row), "");
    row[10000].len = {4};  // overlaps its neighbour by one element
    EXPECT_NE(coverage_error({16384 * 3}, row).find("overlap"), std::string::npos);
    row[10000].len = {2};  // a hole
    EXPECT_NE(coverage_error({16384 * 3}, row).find("a hole"), std::string::npos);

    std::vector<Box> grid;  // 2-D 128 x 128 grid
    for (std::uint64_t i = 0; i < 128; ++i)
        for (std::uint64_t j = 0; j < 128; ++j) grid.push_back({{i * 2, j * 5}, {2, 5}});
    EXPECT_EQ(coverage_error({256, 640}, grid), "");
    grid[5000].off[1] += 1;  // shifted right: overlaps the next block and leaves a hole, same element count
    EXPECT_NE(coverage_error({256, 640}, grid).find("overlap"), std::string::npos);

    std::vector<Box> stacked;  // Megatron stacked [L=512, t=8 row blocks, H]
    for (std::uint64_t l = 0; l < 512; ++l)
        for (std::uint64_t r = 0; r < 8; ++r) stacked.push_back({{l, r * 16, 0}, {1, 16, 64}});
    EXPECT_EQ(coverage_error({512, 128, 64}, stacked), "");

    std::vector<Box> bricks;  // staggered: column c is cut at rows c+1, c+1+64, ... (no common row breaks)
    const std::uint64_t rows = 4096, cols = 64;
    for (std::uint64_t c = 0; c < cols; ++c) {
        std::uint64_t r0 = 0;
        for (std::uint64_t cut = c + 1; r0 < rows; cut += 64) {
            const std::uint64_t r1 = std::min(cut, rows);
            bricks.push_back({{r0, c}, {r1 - r0, 1}});
            r0 = r1;
        }
    }
    EXPECT_EQ(coverage_error({rows, cols}, bricks), "");
    bricks[777].len[1] = 2;  // spills into the next column
    const auto err = coverage_error({rows, cols}, bricks);
    EXPECT_TRUE(err.find("overlap") != std::string::npos || err.find("outside") != std::string::npos) << err;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(secs, 60.0);  // generous (sanitizer builds): only a quadratic blow-up would come near
}

TEST(DcpMetadataCoverage, SmallAwkwardCases) {
    // Non-laminar along dim 0 (left column cut at row 1, right column at row 3): valid.
    EXPECT_EQ(coverage_error({4, 4}, {{{0, 0}, {1, 2}}, {{1, 0}, {3, 2}}, {{0, 2}, {3, 2}}, {{3, 2}, {1, 2}}}), "");
    // Same, but the right column's top block reaches into the bottom one.
    EXPECT_NE(coverage_error({4, 4}, {{{0, 0}, {1, 2}}, {{1, 0}, {3, 2}}, {{0, 2}, {4, 2}}, {{3, 2}, {1, 2}}})
                  .find("overlap"),
              std::string::npos);
    // Empty chunks never overlap anything; a 0-d tensor is one chunk.
    EXPECT_EQ(coverage_error({2, 2}, {{{0, 0}, {2, 2}}, {{1, 1}, {0, 1}}}), "");
    EXPECT_EQ(coverage_error({}, {{{}, {}}}), "");
    EXPECT_NE(coverage_error({}, {{{}, {}}, {{}, {}}}), "");  // two chunks at the same (empty) offsets
    EXPECT_NE(coverage_error({}, {}).find("cover 0 of the 1"), std::string::npos);
    EXPECT_EQ(coverage_error({0, 8}, {}), "");  // an empty tensor needs no chunk
    // Bounds: offsets + sizes beyond the size, including values near 2^63.
    EXPECT_NE(coverage_error({4}, {{{2}, {3}}}).find("lies outside"), std::string::npos);
    EXPECT_NE(coverage_error({4}, {{{std::uint64_t{1} << 62}, {std::uint64_t{1} << 62}}}).find("lies outside"),
              std::string::npos);
    // A size whose element count overflows 64 bits.
    EXPECT_NE(coverage_error({std::uint64_t{1} << 40, std::uint64_t{1} << 40}, {}).find("overflows"), std::string::npos);
}

TEST(DcpMetadataCoverage, MessagesNameTheSourceAndTensor) {
    try {
        parse_dcp_metadata(*metadata_with({4}, {{{0}, {2}}}), "/ckpt/iter_1/.metadata");
        ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
        EXPECT_EQ(e.where(), "/ckpt/iter_1/.metadata");
        EXPECT_NE(std::string(e.what()).find("'t'"), std::string::npos) << e.what();
    }
    EXPECT_THROW(parse_dcp_metadata(*str("not metadata"), "x"), Error);
}

}  // namespace
