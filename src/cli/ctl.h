#pragma once

#include <CLI/CLI.hpp>

namespace segma::cli {

// Adds `segma ctl …`: a client of the REST API (login, users, projects, api-keys, clusters,
// workers, gpus, models, instances and their logs, routes, backends, model-files, usage) with
// --output table|json (json: the server's body as sent), -w for wider tables and --watch on the
// lists that follow the ?watch=true streams (docs/install.md "segma ctl"). The session token is
// kept in ~/.config/segma/credentials.json (mode 0600) or given by SEGMA_TOKEN.
void AddCtlCommands(CLI::App& app);

}  // namespace segma::cli
