// layout_safetensors: byte-exact headers (formats.md 6.1/6.3), huggingface_hub's shard split (6.5), and every produced
// file checked by an independent re-implementation of the reference reader's rules (6.4).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "plan/safetensors_layout.hpp"

namespace {

using m2h::DType;
using m2h::plan::layout_safetensors;
using m2h::plan::OutputFile;
using m2h::plan::OutputLayout;
using m2h::tensors::OutputTensor;

// What the reference reader (safetensors::SafeTensors::read_metadata + Metadata::validate) would accept, checked
// without reusing any of the writer's code. Also checks the writer-side conventions the reader does not enforce:
// metadata first, tensors in offset order, fields in serde order, 8-byte padding with spaces.
void check_file(const OutputFile& f, const std::vector<OutputTensor>& tensors) {
    SCOPED_TRACE(f.name);
    ASSERT_GE(f.header.size(), 8u);
    std::uint64_t n = 0;
    for (int b = 7; b >= 0; --b) n = (n << 8) | static_cast<unsigned char>(f.header[b]);
    ASSERT_EQ(n + 8, f.header.size()) << "header string is the length prefix plus exactly N bytes";
    ASSERT_LE(n, 100'000'000u);
    EXPECT_EQ(n % 8, 0u);
    const std::string text = f.header.substr(8);
    ASSERT_EQ(text.front(), '{');
    const auto close = text.find_last_of('}');
    ASSERT_NE(close, std::string::npos);
    EXPECT_EQ(text.find_first_not_of(' ', close + 1), std::string::npos) << "padding must be spaces only";
    EXPECT_LT(text.size() - close - 1, 8u);
    EXPECT_EQ(text.substr(0, close + 1).find_first_of(" \n\t"), std::string::npos) << "compact JSON";

    nlohmann::ordered_json j;
    ASSERT_NO_THROW(j = nlohmann::ordered_json::parse(text));  // also rejects invalid UTF-8
    ASSERT_TRUE(j.is_object());
    auto it = j.begin();
    ASSERT_NE(it, j.end());
    EXPECT_EQ(it.key(), "__metadata__");
    EXPECT_EQ(it.value(), nlohmann::ordered_json({{"format", "pt"}}));

    struct Entry {
        std::string name;
        std::uint64_t begin, end;
    };
    std::vector<Entry> entries;
    std::uint64_t previous_begin = 0;
    for (++it; it != j.end(); ++it) {
        const auto& v = it.value();
        ASSERT_TRUE(v.is_object()) << it.key();
        std::vector<std::string> fields;
        for (auto f_it = v.begin(); f_it != v.end(); ++f_it) fields.push_back(f_it.key());
        ASSERT_EQ(fields, (std::vector<std::string>{"dtype", "shape", "data_offsets"})) << it.key();
        const auto dtype = m2h::dtype_from_safetensors_name(v["dtype"].get<std::string>());
        ASSERT_TRUE(dtype.has_value()) << it.key();
        ASSERT_TRUE(v["shape"].is_array());
        std::uint64_t numel = 1;
        std::vector<std::uint64_t> shape;
        for (const auto& d : v["shape"]) {
            ASSERT_TRUE(d.is_number_unsigned());
            shape.push_back(d.get<std::uint64_t>());
            ASSERT_FALSE(__builtin_mul_overflow(numel, shape.back(), &numel));
        }
        ASSERT_TRUE(v["data_offsets"].is_array());
        ASSERT_EQ(v["data_offsets"].size(), 2u);
        const auto begin = v["data_offsets"][0].get<std::uint64_t>();
        const auto end = v["data_offsets"][1].get<std::uint64_t>();
        ASSERT_LE(begin, end);
        EXPECT_EQ(end - begin, numel * m2h::dtype_size(*dtype)) << it.key();
        EXPECT_GE(begin, previous_begin) << "header lists tensors in offset order";
        previous_begin = begin;
        entries.push_back({it.key(), begin, end});

        // The header agrees with the input tensor of that name.
        const auto src = std::find_if(tensors.begin(), tensors.end(), [&](const OutputTensor& t) { return t.name == it.key(); });
        ASSERT_NE(src, tensors.end()) << it.key();
        EXPECT_EQ(src->dtype, *dtype);
        EXPECT_EQ(src->shape, shape);
    }
    std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
    std::uint64_t cursor = 0;
    for (const auto& e : entries) {
        EXPECT_EQ(e.begin, cursor) << "gap or overlap at " << e.name;
        cursor = e.end;
    }
    EXPECT_EQ(f.size, 8 + n + cursor) << "file must end exactly at the last tensor";
    EXPECT_EQ(entries.size(), f.tensors.size());
}

void check_layout(const OutputLayout& layout, const std::vector<OutputTensor>& tensors) {
    ASSERT_EQ(layout.placement.size(), tensors.size());
    std::uint64_t total = 0;
    std::vector<int> seen(tensors.size(), 0);
    for (std::size_t fi = 0; fi < layout.files.size(); ++fi) {
        const OutputFile& f = layout.files[fi];
        check_file(f, tensors);
        // f.tensors is data order; placement is absolute and contiguous after the header.
        std::uint64_t cursor = f.header.size();
        for (const std::size_t i : f.tensors) {
            ASSERT_LT(i, tensors.size());
            ++seen[i];
            EXPECT_EQ(layout.placement[i].file, fi);
            EXPECT_EQ(layout.placement[i].offset, cursor) << tensors[i].name;
            cursor += tensors[i].nbytes();
        }
        EXPECT_EQ(cursor, f.size);
    }
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        EXPECT_EQ(seen[i], 1) << tensors[i].name;
        total += tensors[i].nbytes();
    }
    EXPECT_EQ(layout.total_size, total);
    EXPECT_EQ(layout.index_json.has_value(), layout.files.size() > 1);
    if (layout.index_json) {
        const auto idx = nlohmann::json::parse(*layout.index_json);
        EXPECT_EQ(idx["metadata"]["total_size"].get<std::uint64_t>(), total);
        EXPECT_EQ(idx["weight_map"].size(), tensors.size());
        for (std::size_t i = 0; i < tensors.size(); ++i)
            EXPECT_EQ(idx["weight_map"][tensors[i].name], layout.files[layout.placement[i].file].name);
    }
}

std::vector<std::string> names_in_order(const OutputFile& f, const std::vector<OutputTensor>& t) {
    std::vector<std::string> out;
    for (const std::size_t i : f.tensors) out.push_back(t[i].name);
    return out;
}

OutputTensor u8(std::string name, std::uint64_t n) { return {std::move(name), DType::U8, {n}}; }

TEST(Layout, WorkedExampleByteForByte) {
    const std::vector<OutputTensor> t{{"model.norm.weight", DType::BF16, {2048}}};
    const auto layout = layout_safetensors(t, 5'000'000'000);
    ASSERT_EQ(layout.files.size(), 1u);
    const OutputFile& f = layout.files[0];
    EXPECT_EQ(f.name, "model.safetensors");
    const std::string json =
        R"({"__metadata__":{"format":"pt"},"model.norm.weight":{"dtype":"BF16","shape":[2048],"data_offsets":[0,4096]}})";
    ASSERT_EQ(json.size(), 108u);
    const std::string expected = std::string("\x70\0\0\0\0\0\0\0", 8) + json + "    ";
    EXPECT_EQ(f.header, expected);
    EXPECT_EQ(f.header.size(), 120u);
    EXPECT_EQ(f.size, 4216u);
    EXPECT_EQ(layout.placement[0].offset, 120u);
    EXPECT_EQ(layout.total_size, 4096u);
    EXPECT_FALSE(layout.index_json.has_value());
    check_layout(layout, t);
}

TEST(Layout, DtypeDescendingThenBytewiseName) {
    const std::vector<OutputTensor> t{
        {"model.layers.2.mlp.weight", DType::BF16, {4, 2}},
        {"model.layers.10.mlp.weight", DType::BF16, {4, 2}},
        {"model.norm.weight", DType::F32, {4}},
        {"a.bias", DType::F16, {3}},
        {"Z.upper", DType::BF16, {1}},  // 'Z' < 'm' byte-wise
        {"b.scalar", DType::F64, {}},
        {"c.ids", DType::I64, {2}},
    };
    const auto layout = layout_safetensors(t, 1'000'000);
    ASSERT_EQ(layout.files.size(), 1u);
    EXPECT_EQ(names_in_order(layout.files[0], t),
              (std::vector<std::string>{"c.ids", "b.scalar", "model.norm.weight", "Z.upper", "model.layers.10.mlp.weight",
                                        "model.layers.2.mlp.weight", "a.bias"}));
    const std::string& h = layout.files[0].header;
    EXPECT_NE(h.find(R"("b.scalar":{"dtype":"F64","shape":[],"data_offsets":[16,24]})"), std::string::npos) << h;
    EXPECT_NE(h.find(R"("c.ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]})"), std::string::npos) << h;
    check_layout(layout, t);
}

TEST(Layout, NonAsciiByteOrderAndEscaping) {
    // UTF-8 bytes >= 0x80 sort after ASCII (unsigned compare); quotes, backslashes and control characters escape as
    // serde_json does, non-ASCII stays raw.
    const std::vector<OutputTensor> t{
        {"w\xC3\xA9ight", DType::BF16, {1}},
        {"wz", DType::BF16, {1}},
        {"q\"uote\\back\nnl\x01", DType::BF16, {2}},
        {"empty", DType::BF16, {0, 5}},
    };
    const auto layout = layout_safetensors(t, 1 << 20);
    ASSERT_EQ(layout.files.size(), 1u);
    EXPECT_EQ(names_in_order(layout.files[0], t), (std::vector<std::string>{"empty", "q\"uote\\back\nnl\x01", "wz", "w\xC3\xA9ight"}));
    const std::string& h = layout.files[0].header;
    EXPECT_NE(h.find(R"("q\"uote\\back\nnl\u0001":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]})"), std::string::npos) << h;
    EXPECT_NE(h.find(R"("empty":{"dtype":"BF16","shape":[0,5],"data_offsets":[0,0]})"), std::string::npos) << h;
    EXPECT_NE(h.find("\"w\xC3\xA9ight\""), std::string::npos);
    check_layout(layout, t);
}

TEST(Layout, ExactFitStaysInOneShard) {
    const std::vector<OutputTensor> t{u8("a", 40), u8("b", 60)};
    const auto layout = layout_safetensors(t, 100);
    ASSERT_EQ(layout.files.size(), 1u);
    EXPECT_EQ(layout.files[0].name, "model.safetensors");
    EXPECT_FALSE(layout.index_json);
    check_layout(layout, t);
}

TEST(Layout, StrictlyGreaterClosesShard) {
    const std::vector<OutputTensor> t{u8("a", 40), u8("b", 61), u8("c", 39), u8("d", 100)};
    const auto layout = layout_safetensors(t, 100);
    ASSERT_EQ(layout.files.size(), 3u);
    EXPECT_EQ(layout.files[0].name, "model-00001-of-00003.safetensors");
    EXPECT_EQ(layout.files[1].name, "model-00002-of-00003.safetensors");
    EXPECT_EQ(layout.files[2].name, "model-00003-of-00003.safetensors");
    EXPECT_EQ(names_in_order(layout.files[0], t), (std::vector<std::string>{"a"}));
    EXPECT_EQ(names_in_order(layout.files[1], t), (std::vector<std::string>{"b", "c"}));  // 61 + 39 == 100 fits
    EXPECT_EQ(names_in_order(layout.files[2], t), (std::vector<std::string>{"d"}));       // max-sized: not oversized
    check_layout(layout, t);
}

TEST(Layout, OversizedTensorGetsItsOwnShardImmediately) {
    // huggingface_hub appends the oversized tensor at once while {a} stays open, so "big" is shard 1 and {a, b} is
    // shard 2 even though "a" comes first in the state dict. Within a shard, data order is still by name.
    const std::vector<OutputTensor> t{u8("z.first", 30), u8("big", 150), u8("a.second", 50), u8("huge", 101),
                                      u8("c", 30)};
    const auto layout = layout_safetensors(t, 100);
    ASSERT_EQ(layout.files.size(), 4u);
    EXPECT_EQ(names_in_order(layout.files[0], t), (std::vector<std::string>{"big"}));
    EXPECT_EQ(names_in_order(layout.files[1], t), (std::vector<std::string>{"huge"}));
    EXPECT_EQ(names_in_order(layout.files[2], t), (std::vector<std::string>{"a.second", "z.first"}));
    EXPECT_EQ(names_in_order(layout.files[3], t), (std::vector<std::string>{"c"}));
    EXPECT_EQ(layout.files[0].name, "model-00001-of-00004.safetensors");
    EXPECT_EQ(layout.placement[0].file, 2u);
    check_layout(layout, t);
}

TEST(Layout, OnlyOversizedTensorsLeaveNoEmptyShard) {
    const std::vector<OutputTensor> t{u8("x", 200), u8("y", 300)};
    const auto layout = layout_safetensors(t, 100);
    ASSERT_EQ(layout.files.size(), 2u);
    EXPECT_EQ(names_in_order(layout.files[0], t), (std::vector<std::string>{"x"}));
    EXPECT_EQ(names_in_order(layout.files[1], t), (std::vector<std::string>{"y"}));
    check_layout(layout, t);

    const std::vector<OutputTensor> one{u8("only", 500)};
    const auto single = layout_safetensors(one, 100);
    ASSERT_EQ(single.files.size(), 1u);
    EXPECT_EQ(single.files[0].name, "model.safetensors");
    EXPECT_FALSE(single.index_json);
}

TEST(Layout, IndexJsonExactText) {
    const std::vector<OutputTensor> t{
        {"model.embed_tokens.weight", DType::BF16, {4, 8}},  // 64 bytes
        {"model.layers.0.w", DType::F32, {4}},               // 16 bytes
        {"lm_head.weight", DType::BF16, {4, 8}},             // 64 bytes
        {"caf\xC3\xA9", DType::BF16, {1}},                   // 2 bytes, non-ASCII key: Python escapes it
    };
    const auto layout = layout_safetensors(t, 80);
    ASSERT_EQ(layout.files.size(), 2u);
    ASSERT_TRUE(layout.index_json);
    const std::string expected =
        "{\n"
        "  \"metadata\": {\n"
        "    \"total_size\": 146\n"
        "  },\n"
        "  \"weight_map\": {\n"
        "    \"caf\\u00e9\": \"model-00002-of-00002.safetensors\",\n"
        "    \"lm_head.weight\": \"model-00002-of-00002.safetensors\",\n"
        "    \"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\",\n"
        "    \"model.layers.0.w\": \"model-00001-of-00002.safetensors\"\n"
        "  }\n"
        "}\n";
    EXPECT_EQ(*layout.index_json, expected);
    EXPECT_EQ(layout.total_size, 146u);
    check_layout(layout, t);
}

TEST(Layout, ManyShardsRealisticModel) {
    // A small llama-like state dict; every file must pass the reader rules and the index must map every tensor.
    std::vector<OutputTensor> t;
    t.push_back({"model.embed_tokens.weight", DType::BF16, {1000, 64}});
    for (int l = 0; l < 12; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        t.push_back({p + "input_layernorm.weight", DType::BF16, {64}});
        t.push_back({p + "self_attn.q_proj.weight", DType::BF16, {64, 64}});
        t.push_back({p + "self_attn.k_proj.weight", DType::BF16, {16, 64}});
        t.push_back({p + "mlp.up_proj.weight", DType::F32, {256, 64}});
        t.push_back({p + "rotary.inv_freq", DType::F32, {16}});
    }
    t.push_back({"model.norm.weight", DType::BF16, {64}});
    t.push_back({"lm_head.weight", DType::BF16, {1000, 64}});
    const auto layout = layout_safetensors(t, 100'000);
    EXPECT_GT(layout.files.size(), 5u);
    check_layout(layout, t);
    for (const auto& f : layout.files) EXPECT_EQ(f.header.size() % 8, 0u);
}

TEST(Layout, Errors) {
    EXPECT_THROW(layout_safetensors({u8("a", 1), u8("b", 1), u8("a", 2)}, 100), m2h::Error);
    EXPECT_THROW(layout_safetensors({u8("a", 1)}, 0), m2h::Error);
    EXPECT_THROW(layout_safetensors({}, 100), m2h::Error);
    EXPECT_THROW(layout_safetensors({u8("bad\xFF", 1)}, 100), m2h::Error);
    EXPECT_THROW(layout_safetensors({u8("__metadata__", 1)}, 100), m2h::Error);
    const OutputTensor huge{"huge", DType::F32, {1ull << 40, 1ull << 23}};
    EXPECT_THROW(huge.nbytes(), m2h::Error);
    EXPECT_THROW(layout_safetensors({huge}, 100), m2h::Error);
    const OutputTensor big{"big", DType::U8, {~0ull}};
    EXPECT_EQ(big.nbytes(), ~0ull);
    EXPECT_THROW(layout_safetensors({big, u8("one", 1)}, 100), m2h::Error);  // total overflows
}

TEST(Layout, NbytesIsProductTimesElementSize) {
    EXPECT_EQ((OutputTensor{"s", DType::BF16, {}}).nbytes(), 2u);
    EXPECT_EQ((OutputTensor{"e", DType::F32, {3, 0, 7}}).nbytes(), 0u);
    EXPECT_EQ((OutputTensor{"m", DType::F64, {3, 5, 7}}).nbytes(), 840u);
    EXPECT_EQ((OutputTensor{"z", DType::F32, {0, 1ull << 63, 4}}).nbytes(), 0u);
}

}  // namespace
