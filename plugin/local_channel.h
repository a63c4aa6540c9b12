// File: plugin/local_channel.h
//
// A gRPC channel to a unix socket with a subchannel pool of its own. gRPC otherwise shares
// subchannels, and their reconnect back-off, between channels to the same address: after a
// kubelet restart that shared back-off delayed registration by a whole second.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

namespace pcid::plugin {

inline std::shared_ptr<grpc::Channel> LocalChannel(const std::string& socket) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  return grpc::CreateCustomChannel("unix://" + socket, grpc::InsecureChannelCredentials(), args);
}

}  // namespace pcid::plugin
