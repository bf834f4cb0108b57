#include "common/stop_signal.hpp"

#include <csignal>
#include <cstring>

namespace m2h {
namespace {

volatile std::sig_atomic_t g_stop = 0;

extern "C" void on_stop_signal(int signal) { g_stop = signal; }

}  // namespace

void install_stop_signals() {
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    // Interrupted reads and writes resume: the stop is taken at the next agreement point, not mid-call.
    action.sa_flags = SA_RESTART;
    for (const int s : {SIGTERM, SIGINT, SIGUSR1}) sigaction(s, &action, nullptr);
}

int stop_signal() noexcept { return g_stop; }

std::string signal_name(int signal) {
    switch (signal) {
        case SIGTERM: return "SIGTERM";
        case SIGINT: return "SIGINT";
        case SIGUSR1: return "SIGUSR1";
        default: return "signal " + std::to_string(signal);
    }
}

}  // namespace m2h
