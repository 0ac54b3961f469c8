#include "worker/drain.h"

#include <unistd.h>

#include <fmt/format.h>

#include "common/logging.h"
#include "http/client.h"
#include "worker/engines/supervisor.h"

namespace segma::worker {

namespace {

using boost::beast::http::verb;

constexpr char kDrainMessage[] = "stopped by segma worker --drain";

// The worker token, from a registration under the worker's name (as the worker does at start).
Result<std::string> RegisterForToken(const AgentConfig& config) {
  http::ClientRequest req;
  req.method = verb::post;
  req.url = config.server_url + "/v2/workers";
  // The worker is not listening: its port here only fills the record until it registers again
  // with the port it binds (0, "any", is not a port the server accepts).
  const uint16_t port = config.port > 0 ? config.port : AgentConfig{}.port;
  req.Bearer(config.registration_token).JsonBody(RegistrationBody(config, port));
  ASSIGN_OR_RETURN(http::ClientResponse res, http::FetchSync(std::move(req)));
  if (res.status != 201) {
    return UnavailableError(
        fmt::format("registration answered {}: {}", res.status, res.body.substr(0, 300)));
  }
  ASSIGN_OR_RETURN(json::value v, res.Json());
  const json::object& o = v.as_object();
  auto token = o.find("token");
  if (token == o.end() || !token->value().is_string()) {
    return UnavailableError("registration answered without a worker token");
  }
  return std::string(token->value().as_string());
}

// "" when the server took the report, else why not.
std::string Report(const AgentConfig& config, const std::string& token, const DrainedEngine& d) {
  json::object body;
  body["state"] = "ERROR";
  body["state_message"] = kDrainMessage;
  if (d.instance_id < 0) body["port"] = d.port;  // an rpc-server's entry carries its port
  http::ClientRequest req;
  req.method = verb::patch;
  req.url = fmt::format("{}/v2/worker/instances/{}", config.server_url,
                        d.instance_id < 0 ? -d.instance_id : d.instance_id);
  req.Bearer(token).JsonBody(body);
  Result<http::ClientResponse> res = http::FetchSync(std::move(req));
  if (!res.ok()) return res.status().ToString();
  if (res->status >= 400) return fmt::format("HTTP {}: {}", res->status, res->body.substr(0, 300));
  return "";
}

}  // namespace

Result<std::vector<DrainedEngine>> DrainEngines(const AgentConfig& config, Clock& clock) {
  std::vector<DrainedEngine> out;
  for (const engines::EngineRecord& r : engines::ListEngineRecords(config.data_dir)) {
    if (r.alive && r.owned && r.worker_pid != ::getpid()) {
      return FailedPreconditionError(fmt::format(
          "a segma worker (pid {}) runs on {} and owns its engines: stop it first (SIGTERM leaves "
          "its engines running), then drain",
          r.worker_pid, config.data_dir));
    }
    if (r.alive) out.push_back(DrainedEngine{r.instance_id, r.name, r.pid, r.port, false, ""});
  }
  // Reported first: each instance leaves the gateway's rotation before its engine stops.
  if (!out.empty()) {
    Result<std::string> token = RegisterForToken(config);
    for (DrainedEngine& d : out) {
      d.report = token.ok() ? Report(config, *token, d) : token.status().ToString();
    }
  }
  // A supervisor over the data dir that expects nothing stops everything recorded there.
  engines::SupervisorOptions options;
  options.data_dir = config.data_dir;
  options.port_min = config.engine_port_min;
  options.port_max = config.engine_port_max;
  ASSIGN_OR_RETURN(std::unique_ptr<engines::Supervisor> supervisor,
                   engines::Supervisor::Create(options, clock, nullptr));
  (void)supervisor->Recover({});
  supervisor->StopAll();
  for (DrainedEngine& d : out) d.stopped = !engines::ProcessStartTicks(d.pid).has_value();
  return out;
}

}  // namespace segma::worker
