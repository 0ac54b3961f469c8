#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/system/error_code.hpp>

namespace segma::http {

// Writes all of `buffers` to `socket`, which must be in non-blocking mode: synchronously while
// the socket takes them, and only the rest, if any, through the reactor. A write that Asio
// completes at once is still handed back through the scheduler (one more round, one more
// epoll_wait); a request or response nearly always fits the socket buffer, so the synchronous
// attempt saves that round. Used by the server (responses, chunks) and the client (requests).
template <typename Socket, typename Buffers>
boost::asio::awaitable<boost::system::error_code> WriteAll(Socket& socket, const Buffers& buffers) {
  namespace asio = boost::asio;
  boost::system::error_code ec;
  const size_t n = asio::write(socket, buffers, ec);
  if (ec != asio::error::would_block && ec != asio::error::try_again) co_return ec;
  boost::beast::buffers_suffix<Buffers> rest(buffers);
  rest.consume(n);
  auto [aec, an] = co_await asio::async_write(socket, rest, asio::as_tuple(asio::use_awaitable));
  co_return aec;
}

}  // namespace segma::http
