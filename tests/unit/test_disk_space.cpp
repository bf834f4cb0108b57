// The free-space check that runs before any tensor moves (the engine's and the tmpfs e2e test's).
#include <gtest/gtest.h>

#include "common/error.hpp"
#include "io/disk_space.hpp"

using namespace m2h::io;

TEST(DiskSpace, ShortfallNamesWhatIsMissing) {
    EXPECT_EQ(space_shortfall(100, 3, {100, 3}), "");
    const auto bytes = space_shortfall(2'000'000'000, 1, {1'000'000'000, 10});
    EXPECT_NE(bytes.find("not enough free space"), std::string::npos) << bytes;
    EXPECT_NE(bytes.find("2.00 GB"), std::string::npos) << bytes;
    EXPECT_NE(space_shortfall(10, 5, {1000, 4}).find("not enough free inodes"), std::string::npos);
}

TEST(DiskSpace, StatvfsOfARealFolder) {
    const auto free = free_space("/tmp");
    EXPECT_GT(free.bytes, 0u);
    EXPECT_THROW(free_space("/nonexistent/folder/for/statvfs"), m2h::Error);
}
