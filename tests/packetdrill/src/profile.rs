//! Linux's defaults, as packetdrill's `gtests/net/tcp/common/defaults.sh` sets them, expressed
//! with `StackConfig`'s existing fields (no special case in the core).

use cnet_stack::StackConfig;

/// `cfg` with the TCP settings of a Linux host after `defaults.sh`.
pub fn linux_profile(mut cfg: StackConfig) -> StackConfig {
    // net.ipv4.tcp_rmem = 4096 540000 15M; tcp_wmem = 4096 256K 4M.
    cfg.tcp_rcv_buf = 540_000;
    cfg.tcp_snd_buf = 256 * 1024;
    cfg.tcp_rcv_buf_max = 15 * 1024 * 1024;
    cfg.tcp_timestamps = true;
    cfg.tcp_sack = true;
    cfg.tcp_window_scaling = true;
    cfg.tcp_syncookies = true;
    // tcp_syn_retries = 5 (tcp_synack_retries = 5 too).
    cfg.tcp_syn_retries = 5;
    // TCP_RTO_MIN, TCP_TIMEOUT_INIT, TCP_RTO_MAX, TCP_DELACK_MIN.
    cfg.tcp_rto_min_ms = 200;
    cfg.tcp_rto_initial_ms = 1000;
    cfg.tcp_rto_max_ms = 120_000;
    cfg.tcp_delack_ms = 40;
    cfg.tcp_time_wait_ms = 60_000;
    cfg.tcp_fin_timeout_ms = 60_000;
    cfg.tcp_tlp = true;
    // Linux sends what the write queue holds as TSO packets that carry PSH.
    cfg.tcp_push_cwnd_limited = true;
    // A fixed seed: the same ISNs and ports on every run.
    cfg.seed = 1;
    cfg
}
