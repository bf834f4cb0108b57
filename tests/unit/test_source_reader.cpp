// SourceReader keeps at most 64 source files open however many a writer reads from, and reads the right bytes
// from every one of them while files are closed and reopened.
#include <gtest/gtest.h>

#include <dirent.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "exchange/source_reader.hpp"

namespace fs = std::filesystem;
using m2h::exchange::SourceReader;
using m2h::tensors::SourceFile;

namespace {

int open_fds() {
    int n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) ++n;
    return n;
}

}  // namespace

TEST(SourceReader, ReadsFromManyFilesWithABoundedNumberOpen) {
    const auto dir = fs::path(::testing::TempDir()) / ("m2h_source_reader_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    std::vector<SourceFile> files;
    for (int i = 0; i < 150; ++i) {
        const auto path = dir / ("rank_" + std::to_string(i) + ".pt");
        std::ofstream(path, std::ios::binary) << "file " << i << " payload";
        files.push_back({path.string()});
    }
    const int before = open_fds();
    SourceReader reader(files, 0);
    int most = 0;
    for (int pass = 0; pass < 2; ++pass)
        for (std::uint32_t i = 0; i < files.size(); i += (pass ? 7 : 1)) {
            const std::string expected = "file " + std::to_string(i);
            std::vector<std::byte> got(expected.size());
            reader.read_at(i, 0, got);
            EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data()), got.size()), expected);
            most = std::max(most, open_fds() - before);
        }
    EXPECT_LE(most, 64);
    EXPECT_GE(most, 64);  // it does keep files open between reads
    fs::remove_all(dir);
}
