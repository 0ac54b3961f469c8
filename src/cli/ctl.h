#pragma once

#include <CLI/CLI.hpp>

namespace segma::cli {

// Adds `segma ctl …`: a client of the REST API (login, users, projects, api-keys, clusters,
// workers, gpus) with --output table|json. The session token is kept in
// ~/.config/segma/credentials.json (mode 0600) or given by SEGMA_TOKEN.
void AddCtlCommands(CLI::App& app);

}  // namespace segma::cli
