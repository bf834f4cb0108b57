// Replays every saved fuzzer input (tests/fuzz_regressions/<target>/*) through the same entry functions the
// libFuzzer targets call (fuzz/fuzz_entries.hpp). Each input must either parse or fail with m2h::Error; any
// other exception fails the test, and a crash or sanitizer report (under ci/test-sanitize.sh) fails the run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <typeinfo>
#include <vector>

#include "../../fuzz/fuzz_entries.hpp"
#include "common/error.hpp"
#include "formats/dcp_metadata.hpp"
#include "pickle/pickle_machine.hpp"

namespace {

namespace fs = std::filesystem;

fs::path regressions_root() {
    if (const char* dir = std::getenv("M2H_SOURCE_DIR"); dir != nullptr && *dir != '\0')
        return fs::path(dir) / "tests" / "fuzz_regressions";
    return fs::path(__FILE__).parent_path().parent_path() / "fuzz_regressions";  // tests/unit/.. = tests/
}

std::vector<std::uint8_t> read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class FuzzRegressions : public ::testing::TestWithParam<const char*> {};

TEST_P(FuzzRegressions, EveryInputParsesOrFailsWithError) {
    const std::string target = GetParam();
    const auto entry = m2h::fuzz::entry_by_name(target);
    ASSERT_NE(entry, nullptr) << target;
    const fs::path dir = regressions_root() / target;
    ASSERT_TRUE(fs::is_directory(dir)) << dir << " is missing";

    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.is_regular_file() && e.path().filename().string().front() != '.') files.push_back(e.path());
    std::sort(files.begin(), files.end());
    ASSERT_FALSE(files.empty()) << dir << " holds no inputs";

    std::size_t accepted = 0, refused = 0;
    for (const auto& f : files) {
        const auto bytes = read_file(f);
        try {
            entry({bytes.data(), bytes.size()});
            ++accepted;
        } catch (const m2h::Error&) {
            ++refused;
        } catch (const std::exception& e) {
            ADD_FAILURE() << f << ": escaped as a " << typeid(e).name() << ", not m2h::Error: " << e.what();
        } catch (...) {
            ADD_FAILURE() << f << ": threw something that is not a std::exception";
        }
    }
    RecordProperty("accepted", static_cast<int>(accepted));
    RecordProperty("refused", static_cast<int>(refused));
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzRegressions,
                         ::testing::Values("zip_archive", "pickle", "torch_archive", "dcp_metadata",
                                           "safetensors_header"),
                         [](const auto& info) { return std::string(info.param); });

// Inputs too large to keep as files: made here.

// A protocol-2 .metadata pickle of one [2n, n] float32 tensor in n staggered chunks, chunk i at (i, i) with
// sizes (n, 1): no two overlap, yet every pair overlaps along dim 0, so a pairwise sweep needs n^2/2 checks.
std::vector<std::byte> staggered_dcp_metadata(std::uint32_t n) {
    std::string p = "\x80\x02";
    const auto i32 = [&](std::uint32_t v) {
        p += 'J';
        for (int k = 0; k < 4; ++k) p += static_cast<char>((v >> (8 * k)) & 0xFF);
    };
    const auto str = [&](const std::string& t) {
        p += 'X';
        for (int k = 0; k < 4; ++k) p += static_cast<char>((t.size() >> (8 * k)) & 0xFF);
        p += t;
    };
    const std::string dcp = "torch.distributed.checkpoint.metadata";
    // An object of a DCP class whose BUILD state is the dict of the (key, value) pairs `fill` pushes.
    const auto object = [&](const std::string& module, const std::string& cls, const auto& fill) {
        p += "c" + module + "\n" + cls + "\n)\x81}(";
        fill();
        p += "ub";
    };
    const auto pair = [&](std::uint32_t a, std::uint32_t b) {
        i32(a);
        i32(b);
        p += "\x86";
    };
    object(dcp, "Metadata", [&] {
        str("state_dict_metadata");
        p += "}(";
        str("w");
        object(dcp, "TensorStorageMetadata", [&] {
            str("properties");
            p += "c" + dcp + "\nTensorProperties\n)\x81";
            p += "(ctorch\nfloat32\nctorch\nstrided\n\x89N\x89tb";  // (dtype, layout, rg, mem, pin)
            str("size");
            pair(2 * n, n);
            str("chunks");
            p += "](";
            for (std::uint32_t i = 0; i < n; ++i)
                object(dcp, "ChunkStorageMetadata", [&] {
                    str("offsets");
                    pair(i, i);
                    str("sizes");
                    pair(n, 1);
                });
            p += "e";
        });
        p += "u";
        str("storage_data");
        p += "}(";
        for (std::uint32_t i = 0; i < n; ++i) {
            object(dcp, "MetadataIndex", [&] {
                str("fqn");
                str("w");
                str("offset");
                pair(i, i);
            });
            object("torch.distributed.checkpoint.filesystem", "_StorageInfo", [&] {
                str("relative_path");
                str("__0_0.distcp");
                str("offset");
                i32(4 * i);
                str("length");
                i32(4);
            });
        }
        p += "u";
    });
    p += ".";
    const auto* b = reinterpret_cast<const std::byte*>(p.data());
    return std::vector<std::byte>(b, b + p.size());
}

TEST(ParserWorkLimits, StaggeredDcpChunksAreRefusedWithoutQuadraticWork) {
    // 8000 chunks: 32 million pairwise checks, over the 20 million the parser allows. Without the bound, 20000
    // such chunks (a 2.5 MB file) took over a minute of CPU under AddressSanitizer, and 10x more took 100x longer.
    const auto bytes = staggered_dcp_metadata(8000);
    const auto root = m2h::pickle::unpickle(bytes, "staggered", m2h::pickle::PersistentLoad{});
    ASSERT_NE(root, nullptr);
    try {
        (void)m2h::formats::parse_dcp_metadata(*root, "staggered");
        FAIL() << "accepted";
    } catch (const m2h::Error& e) {
        EXPECT_NE(std::string(e.what()).find("too irregularly"), std::string::npos) << e.what();
    }
    // Fewer chunks stay within the bound: the same layout is then refused for its hole, after the full check.
    const auto small = staggered_dcp_metadata(300);
    const auto small_root = m2h::pickle::unpickle(small, "staggered", m2h::pickle::PersistentLoad{});
    try {
        (void)m2h::formats::parse_dcp_metadata(*small_root, "staggered");
        FAIL() << "accepted";
    } catch (const m2h::Error& e) {
        EXPECT_NE(std::string(e.what()).find("a hole"), std::string::npos) << e.what();
    }
}

}  // namespace
