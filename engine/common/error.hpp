#pragma once
// One exception type for every failure the user can cause: it names the file (or key) and the problem,
// and is caught once at the top of main, which prints it as a single line.
#include <stdexcept>
#include <string>

namespace m2h {

class Error : public std::runtime_error {
public:
    Error(std::string where, const std::string& problem)
        : std::runtime_error(where.empty() ? problem : where + ": " + problem), where_(std::move(where)) {}
    const std::string& where() const noexcept { return where_; }

private:
    std::string where_;
};

}  // namespace m2h
