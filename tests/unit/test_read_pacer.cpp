// --max-read-rate: the wait after a read is what brings the reader back to the rate, never more, and none
// without a limit; a stop signal ends the wait at once.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <thread>

#include "common/stop_signal.hpp"
#include "exchange/read_pacer.hpp"

using m2h::exchange::pacing_delay;
using m2h::exchange::ReadPacer;
using namespace std::chrono_literals;
using std::chrono::nanoseconds;

TEST(ReadPacer, DelayBringsTheAverageBackToTheRate) {
    // 200 MiB read at 100 MiB/s is due at 2 s: after 0.5 s, wait 1.5 s.
    EXPECT_EQ(pacing_delay(200ull << 20, 500ms, 100ull << 20), 1500ms);
    EXPECT_EQ(pacing_delay(1000, 0ns, 1000), 1s);
    EXPECT_EQ(pacing_delay(1, 0ns, 3), nanoseconds(333'333'333));
}

TEST(ReadPacer, NoDelayAtOrBelowTheRateOrWithoutALimit) {
    EXPECT_EQ(pacing_delay(1000, 1s, 1000), 0ns);   // exactly at the rate
    EXPECT_EQ(pacing_delay(1000, 5s, 1000), 0ns);   // behind it: no catching up is owed, and no burst is asked
    EXPECT_EQ(pacing_delay(0, 0ns, 1000), 0ns);
    EXPECT_EQ(pacing_delay(1ull << 40, 0ns, 0), 0ns);  // 0: no limit
}

TEST(ReadPacer, HugeTotalsDoNotOverflow) {
    // 16 EiB at 1 B/s: capped (about 30 years), positive, no wrap-around.
    const auto d = pacing_delay(~0ull, 0ns, 1);
    EXPECT_GT(d, std::chrono::hours(24 * 365 * 30));
    EXPECT_EQ(pacing_delay(~0ull, 0ns, ~0ull), 1s);
}

TEST(ReadPacer, SleepsToTheRateAndNotWithoutOne) {
    ReadPacer none(0);
    auto t0 = std::chrono::steady_clock::now();
    none.after_read(1ull << 30);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 50ms);

    ReadPacer paced(10'000);  // 2,000 bytes at 10 kB/s: due at 0.2 s
    t0 = std::chrono::steady_clock::now();
    paced.after_read(1'000);
    paced.after_read(1'000);
    const auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_GE(took, 195ms);
    EXPECT_LT(took, 2s);
}

// Last in this file: the stop flag, once raised, stays raised for the process.
TEST(ReadPacer, AStopSignalEndsTheSleep) {
    m2h::install_stop_signals();
    ReadPacer paced(1);  // 1,000 bytes at 1 B/s: a 1,000 s sleep, unless the signal ends it
    std::thread signaller([] {
        std::this_thread::sleep_for(200ms);
        std::raise(SIGUSR1);
    });
    const auto t0 = std::chrono::steady_clock::now();
    paced.after_read(1'000);
    const auto took = std::chrono::steady_clock::now() - t0;
    signaller.join();
    EXPECT_EQ(m2h::stop_signal(), SIGUSR1);
    EXPECT_GE(took, 150ms);
    EXPECT_LT(took, 1s);  // within a sleep slice of the signal
}
