# free_port: print a loopback TCP port nothing listens on, for the
# integration scripts' servers (sourced by every tests/integration script);
# start_server: one infer-server on two such ports (below).
# Ports come from below the kernel's ephemeral range
# (/proc/sys/net/ipv4/ip_local_port_range): a port in that range can be some
# client socket's local port, which a connect probe does not see but which
# makes the server's bind fail ("Address in use"; seen once in CI-like runs).
free_port() {
    local lo=32768 p
    read -r lo _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
    [ "$lo" -gt 11024 ] || lo=11024
    for _ in $(seq 1 100); do
        p=$((10000 + RANDOM % (lo - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

# start_server BLOCKS: start "$bin" (infer-server) on "$model" with its RPC
# and HTTP listeners on free loopback ports and cache_config.num_blocks=BLOCKS,
# its stderr in $tmp/server.log. Sets tmp (a directory removed at exit), base
# (the HTTP base URL), rpc_port, http_port and pid, and an EXIT trap that
# kills the server.
start_server() {
    tmp=$(mktemp -d)
    rpc_port=$(free_port) && http_port=$(free_port) || { echo "no free port"; exit 1; }
    base="http://127.0.0.1:$http_port"
    unset ENGINE_API_KEY
    "$bin" -m "$model" --set "server.listen=tcp://127.0.0.1:$rpc_port" \
        --set "server.http_listen=$base" --set cache_config.num_blocks="$1" 2>"$tmp/server.log" &
    pid=$!
    trap 'kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
}
