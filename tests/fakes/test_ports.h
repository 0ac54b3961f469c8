#pragma once

// TCP ports for tests that start servers in other processes (which must be told a port before
// they bind it). Binding port 0, reading the number and closing the socket leaves a window in
// which another process can take the port; parallel test processes then collide now and then.
// ReservePorts closes that window for every process that asks through it:
//  - ports come from 20000-31999, below the kernel's ephemeral range (32768+), so no port-0 bind
//    and no outgoing connection of any process is ever given one of them;
//  - each port is claimed by an flock on /tmp/segma-test-ports/<port>, held until this process
//    exits, so no other test process takes it meanwhile;
//  - a claimed port is also checked bindable (something outside the tests may hold it).

namespace segma::testing {

// Reserves `count` consecutive ports for the rest of this process's life and returns the first.
// Aborts the test binary if none is left (40 000 test processes at once).
int ReservePorts(int count = 1);

}  // namespace segma::testing
