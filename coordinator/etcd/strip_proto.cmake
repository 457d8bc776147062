# Copies one of etcd's .proto files (Debian's golang-etcd-server-dev) into the build tree without
# what only Go's code generators need, so that protoc and grpc_cpp_plugin compile it alone: the
# gogoproto and google/api/annotations imports, file-level `option (gogoproto.x) = ...;`, field
# options `[(gogoproto.x) = ...]` and the `option (google.api.http) = { ... };` blocks of the
# JSON gateway. Package names, messages and field numbers are kept as they are.
#   cmake -DIN=<etcd proto> -DOUT=<copy> -P strip_proto.cmake
if(NOT DEFINED IN OR NOT DEFINED OUT)
  message(FATAL_ERROR "strip_proto.cmake: IN and OUT must be set")
endif()
file(READ "${IN}" text)
string(REGEX REPLACE "import \"gogoproto/gogo\\.proto\";" "" text "${text}")
string(REGEX REPLACE "import \"google/api/annotations\\.proto\";" "" text "${text}")
string(REGEX REPLACE "option \\(gogoproto\\.[A-Za-z0-9_]+\\) *= *[A-Za-z0-9_\"]+ *;" "" text "${text}")
string(REGEX REPLACE " *\\[\\(gogoproto\\.[^]]*\\]" "" text "${text}")
# The http option's nested `additional_bindings { ... }` first, then the option's own braces.
string(REGEX REPLACE "additional_bindings *{[^{}]*}" "" text "${text}")
string(REGEX REPLACE "option \\(google\\.api\\.http\\) *= *{[^{}]*} *;" "" text "${text}")
if(text MATCHES "gogoproto|google\\.api")
  message(FATAL_ERROR "strip_proto.cmake: ${IN} still names gogoproto or google.api after stripping")
endif()
file(WRITE "${OUT}" "${text}")
