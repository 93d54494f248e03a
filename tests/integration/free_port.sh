# free_port: print a loopback TCP port nothing listens on, for the
# integration scripts' servers (sourced by http_curl.sh and loadtest_e2e.sh).
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
