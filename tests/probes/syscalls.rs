//! A probe the tests run inside containers, built statically by the harness
//! (`molde_tests::probe`) with rustc alone, so it needs no crate and runs in
//! a busybox rootfs. Each argument names a check; each prints one line,
//! `NAME RESULT`, RESULT being `ok` or the errno's name:
//!
//! - `keyctl`, `add_key`, `unshare-user`, `io_uring_setup`, `clone3`,
//!   `clone-newuser`, `fork` (clone without namespaces), `sys1000`: the raw
//!   syscall (arguments that would succeed if allowed; a child exits at once);
//! - `threads`: four threads started and joined (glibc's pthread_create
//!   tries clone3 first and falls back to clone on ENOSYS);
//! - `dns-server`: answers DNS queries on 127.0.0.1:53 (A records,
//!   10.1.2.3) until killed, for busybox's nslookup to ask.

use std::ffi::{c_char, c_long};

unsafe extern "C" {
    fn syscall(number: c_long, ...) -> c_long;
}

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const KEYCTL: i64 = 250;
    pub const ADD_KEY: i64 = 248;
    pub const UNSHARE: i64 = 272;
    pub const CLONE: i64 = 56;
}
#[cfg(target_arch = "aarch64")]
mod nr {
    pub const KEYCTL: i64 = 219;
    pub const ADD_KEY: i64 = 217;
    pub const UNSHARE: i64 = 97;
    pub const CLONE: i64 = 220;
}
const IO_URING_SETUP: i64 = 425;
const CLONE3: i64 = 435;
const KEY_SPEC_SESSION_KEYRING: i64 = -3;
const CLONE_NEWUSER: i64 = 0x1000_0000;

fn errno_name(e: i32) -> String {
    match e {
        1 => "EPERM".into(),
        14 => "EFAULT".into(),
        22 => "EINVAL".into(),
        38 => "ENOSYS".into(),
        n => format!("errno{n}"),
    }
}

fn result(r: c_long) -> String {
    if r >= 0 {
        "ok".into()
    } else {
        errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

fn main() {
    for check in std::env::args().skip(1) {
        let key_type = c"user".as_ptr();
        let desc = c"probe".as_ptr();
        let payload = b"x";
        // SAFETY: each call passes values or pointers to live data the
        // kernel reads (or nothing); clone3's struct is a zeroed buffer of
        // its size, which with no flags and no stack would fork, so its
        // child (if any) exits at once.
        let r = unsafe {
            match check.as_str() {
                "keyctl" => result(syscall(nr::KEYCTL as c_long, 0 as c_long, KEY_SPEC_SESSION_KEYRING as c_long, 0 as c_long)),
                "add_key" => result(syscall(
                    nr::ADD_KEY as c_long,
                    key_type,
                    desc,
                    payload.as_ptr() as *const c_char,
                    payload.len(),
                    KEY_SPEC_SESSION_KEYRING as c_long,
                )),
                "unshare-user" => result(syscall(nr::UNSHARE as c_long, CLONE_NEWUSER as c_long)),
                "io_uring_setup" => {
                    let mut params = [0u8; 120];
                    result(syscall(IO_URING_SETUP as c_long, 4 as c_long, params.as_mut_ptr()))
                }
                "clone3" => {
                    let mut args = [0u64; 11];
                    args[4] = 17; // exit_signal: SIGCHLD
                    let r = syscall(CLONE3 as c_long, args.as_mut_ptr(), std::mem::size_of_val(&args));
                    if r == 0 {
                        std::process::exit(0);
                    }
                    result(r)
                }
                "clone-newuser" => {
                    let r = syscall(nr::CLONE as c_long, (CLONE_NEWUSER | 17) as c_long, 0 as c_long);
                    if r == 0 {
                        std::process::exit(0);
                    }
                    result(r)
                }
                "fork" => {
                    let r = syscall(nr::CLONE as c_long, 17 as c_long, 0 as c_long);
                    if r == 0 {
                        std::process::exit(0);
                    }
                    result(r)
                }
                "sys1000" => result(syscall(1000 as c_long)),
                "threads" => threads(),
                "dns-server" => dns_server(),
                other => format!("unknown check {other}"),
            }
        };
        println!("{check} {r}");
    }
}

fn threads() -> String {
    let handles: Vec<_> = (0..4u64)
        .map(|i| std::thread::Builder::new().spawn(move || (0..100_000u64).map(|x| x ^ i).sum::<u64>()))
        .collect();
    let mut sum = 0u64;
    for h in handles {
        match h {
            Ok(h) => sum = sum.wrapping_add(h.join().unwrap_or(0)),
            Err(e) => return format!("spawn failed: {e}"),
        }
    }
    if sum > 0 { "ok".into() } else { "no work done".into() }
}

/// A DNS responder: every query for an A record gets 10.1.2.3.
fn dns_server() -> String {
    let sock = match std::net::UdpSocket::bind("127.0.0.1:53") {
        Ok(s) => s,
        Err(e) => return format!("bind: {e}"),
    };
    println!("dns-server listening");
    let mut buf = [0u8; 512];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if n < 12 {
            continue;
        }
        // The question ends at the name's zero byte, then type and class.
        let mut end = 12;
        while end < n && buf[end] != 0 {
            end += buf[end] as usize + 1;
        }
        end += 5;
        if end > n {
            continue;
        }
        let qtype = u16::from_be_bytes([buf[end - 4], buf[end - 3]]);
        let mut answer = buf[..end].to_vec();
        answer[2] = 0x81; // a response, recursion desired
        answer[3] = 0x80; // recursion available, no error
        answer[8..12].fill(0);
        if qtype == 1 {
            answer[6..8].copy_from_slice(&1u16.to_be_bytes());
            // The name by pointer to the question's, type A, class IN, TTL 60, 4 bytes.
            answer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3]);
        } else {
            answer[6..8].fill(0);
        }
        let _ = sock.send_to(&answer, from);
    }
}
