//! WasmEdge's socket extension of `wasi_snapshot_preview1`, as llama-api-server uses it (through the
//! `wasmedge_wasi_socket` crate): sock_open, sock_bind, sock_listen, sock_accept(fd, *new_fd), sock_recv,
//! sock_send, sock_shutdown, sock_setsockopt, sock_getlocaladdr and sock_getpeeraddr over real sockets.
//! A socket is a descriptor in the guest's one descriptor space: fd_close, fd_fdstat_get and
//! fd_fdstat_set_flags on it are answered here, and on any other descriptor by WASI as before.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};

use socket2::{Domain, Socket, Type};
use wasmtime::{Caller, Extern, Linker, Store};

use crate::engine::State;

const MODULE: &str = "wasi_snapshot_preview1";
/// Socket descriptors start here, far above what WASI hands out for files.
const FIRST_FD: u32 = 1 << 20;
// WASI errno values.
const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const EIO: i32 = 29;
const ENOTSUP: i32 = 58;
// fd_fdstat: filetype SOCKET_STREAM, and the rights a socket has.
const FILETYPE_SOCKET_STREAM: u8 = 6;
const FDFLAGS_NONBLOCK: u16 = 1 << 2;

#[derive(Default)]
pub struct Sockets {
    table: HashMap<u32, Socket>,
    next: u32,
}

impl Sockets {
    fn insert(&mut self, socket: Socket) -> u32 {
        let fd = FIRST_FD + self.next;
        self.next += 1;
        self.table.insert(fd, socket);
        fd
    }
}

/// A Linux errno as WASI numbers it (the ones sockets meet; EIO otherwise).
fn errno(err: &std::io::Error) -> i32 {
    match err.raw_os_error() {
        Some(libc::EADDRINUSE) => 3,
        Some(libc::EADDRNOTAVAIL) => 4,
        Some(libc::EAGAIN) => 6,
        Some(libc::EBADF) => EBADF,
        Some(libc::ECONNABORTED) => 13,
        Some(libc::ECONNREFUSED) => 14,
        Some(libc::ECONNRESET) => 15,
        Some(libc::EINTR) => 27,
        Some(libc::EINVAL) => EINVAL,
        Some(libc::ENOTCONN) => 53,
        Some(libc::EPIPE) => 64,
        Some(libc::EACCES) => 2,
        _ => EIO,
    }
}

fn memory(caller: &mut Caller<'_, State>) -> Option<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Some(memory),
        _ => None,
    }
}

fn read(caller: &mut Caller<'_, State>, ptr: i32, len: usize) -> Option<Vec<u8>> {
    let memory = memory(caller)?;
    let start = ptr as u32 as usize;
    memory
        .data(&caller)
        .get(start..start.checked_add(len)?)
        .map(<[u8]>::to_vec)
}

fn write(caller: &mut Caller<'_, State>, ptr: i32, bytes: &[u8]) -> bool {
    memory(caller).is_some_and(|memory| memory.write(caller, ptr as u32 as usize, bytes).is_ok())
}

/// `value` as a u32 at `ptr`: SUCCESS, or EFAULT when the guest's pointer is out of its memory.
fn put_u32(caller: &mut Caller<'_, State>, ptr: i32, value: u32) -> i32 {
    if write(caller, ptr, &value.to_le_bytes()) {
        SUCCESS
    } else {
        EFAULT
    }
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("four bytes"))
}

/// The (pointer, length) pairs of an iovec array.
fn iovecs(caller: &mut Caller<'_, State>, ptr: i32, count: i32) -> Option<Vec<(u32, usize)>> {
    let raw = read(caller, ptr, (count as u32 as usize).checked_mul(8)?)?;
    Some(
        raw.chunks(8)
            .map(|c| (u32_at(c, 0), u32_at(c, 4) as usize))
            .collect(),
    )
}

fn sockets<'a>(caller: &'a mut Caller<'_, State>) -> &'a mut Sockets {
    &mut caller.data_mut().sockets
}

/// The address a WasiAddress {buf, size} points to (4 or 16 bytes) with `port`.
fn address(caller: &mut Caller<'_, State>, ptr: i32, port: u32) -> Option<SocketAddr> {
    let header = read(caller, ptr, 8)?;
    let bytes = read(caller, u32_at(&header, 0) as i32, u32_at(&header, 4) as usize)?;
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::try_from(port).ok()?))
}

/// Write an address as sock_getlocaladdr/sock_getpeeraddr do: its bytes into the WasiAddress buffer,
/// the type (4 or 6) and the port.
fn put_address(caller: &mut Caller<'_, State>, addr: SocketAddr, at: i32, kind: i32, port: i32) -> i32 {
    let Some(header) = read(caller, at, 8) else {
        return EFAULT;
    };
    let (bytes, family): (Vec<u8>, u32) = match addr.ip() {
        IpAddr::V4(ip) => (ip.octets().to_vec(), 4),
        IpAddr::V6(ip) => (ip.octets().to_vec(), 6),
    };
    if (u32_at(&header, 4) as usize) < bytes.len() {
        return EINVAL;
    }
    let ok = write(caller, u32_at(&header, 0) as i32, &bytes)
        && write(caller, kind, &family.to_le_bytes())
        && write(caller, port, &u32::from(addr.port()).to_le_bytes());
    if ok {
        SUCCESS
    } else {
        EFAULT
    }
}

fn with_socket(
    caller: &mut Caller<'_, State>,
    fd: i32,
    f: impl FnOnce(&Socket) -> std::io::Result<()>,
) -> i32 {
    match sockets(caller).table.get(&(fd as u32)) {
        None => EBADF,
        Some(socket) => match f(socket) {
            Ok(()) => SUCCESS,
            Err(err) => errno(&err),
        },
    }
}

/// Define the socket functions; WASI's fd_close, fd_fdstat_get and fd_fdstat_set_flags (already in the
/// linker, taken from `store`) still answer for every other descriptor.
pub fn define(linker: &mut Linker<State>, store: &mut Store<State>) -> wasmtime::Result<()> {
    let original = |linker: &Linker<State>, store: &mut Store<State>, name: &str| {
        linker
            .get(&mut *store, MODULE, name)?
            .into_func()
            .ok_or_else(|| wasmtime::format_err!("WASI's {name} is not a function"))
    };
    let fd_close = original(linker, store, "fd_close")?;
    let fd_fdstat_get = original(linker, store, "fd_fdstat_get")?;
    let fd_fdstat_set_flags = original(linker, store, "fd_fdstat_set_flags")?;
    linker.allow_shadowing(true);
    linker.func_wrap(
        MODULE,
        "sock_open",
        |mut caller: Caller<'_, State>, family: i32, kind: i32, out: i32| {
            let domain = match family {
                1 => Domain::IPV4,
                2 => Domain::IPV6,
                _ => return EINVAL,
            };
            if kind != 2 {
                return ENOTSUP; // only stream sockets here
            }
            match Socket::new(domain, Type::STREAM, None) {
                Ok(socket) => {
                    let fd = sockets(&mut caller).insert(socket);
                    put_u32(&mut caller, out, fd)
                }
                Err(err) => errno(&err),
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_bind",
        |mut caller: Caller<'_, State>, fd: i32, addr: i32, port: i32| {
            let Some(addr) = address(&mut caller, addr, port as u32) else {
                return EINVAL;
            };
            with_socket(&mut caller, fd, |socket| socket.bind(&addr.into()))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_listen",
        |mut caller: Caller<'_, State>, fd: i32, backlog: i32| {
            with_socket(&mut caller, fd, |socket| socket.listen(backlog.clamp(1, 4096)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_accept",
        |mut caller: Caller<'_, State>, fd: i32, out: i32| {
            let accepted = match sockets(&mut caller).table.get(&(fd as u32)) {
                None => return EBADF,
                Some(socket) => socket.accept(),
            };
            match accepted {
                Ok((socket, _peer)) => {
                    let new = sockets(&mut caller).insert(socket);
                    put_u32(&mut caller, out, new)
                }
                Err(err) => errno(&err),
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_recv",
        |mut caller: Caller<'_, State>,
         fd: i32,
         iovs: i32,
         count: i32,
         _flags: i32,
         len_out: i32,
         flags_out: i32| {
            let Some(iovs) = iovecs(&mut caller, iovs, count) else {
                return EFAULT;
            };
            let Some(&(ptr, size)) = iovs.iter().find(|(_, size)| *size > 0) else {
                return if write(&mut caller, len_out, &0u32.to_le_bytes()) {
                    SUCCESS
                } else {
                    EFAULT
                };
            };
            let mut buf = vec![MaybeUninit::<u8>::uninit(); size.min(1 << 20)];
            let received = match sockets(&mut caller).table.get(&(fd as u32)) {
                None => return EBADF,
                Some(socket) => socket.recv(&mut buf),
            };
            match received {
                Ok(n) => {
                    let data: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
                    let ok = write(&mut caller, ptr as i32, &data)
                        && write(&mut caller, len_out, &(n as u32).to_le_bytes())
                        && write(&mut caller, flags_out, &0u32.to_le_bytes());
                    if ok {
                        SUCCESS
                    } else {
                        EFAULT
                    }
                }
                Err(err) => errno(&err),
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_send",
        |mut caller: Caller<'_, State>, fd: i32, iovs: i32, count: i32, _flags: i32, len_out: i32| {
            let Some(iovs) = iovecs(&mut caller, iovs, count) else {
                return EFAULT;
            };
            let mut data = Vec::new();
            for (ptr, size) in iovs {
                match read(&mut caller, ptr as i32, size) {
                    Some(bytes) => data.extend_from_slice(&bytes),
                    None => return EFAULT,
                }
            }
            let sent = match sockets(&mut caller).table.get(&(fd as u32)) {
                None => return EBADF,
                Some(socket) => socket.send_with_flags(&data, libc::MSG_NOSIGNAL),
            };
            match sent {
                Ok(n) => put_u32(&mut caller, len_out, n as u32),
                Err(err) => errno(&err),
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_shutdown",
        |mut caller: Caller<'_, State>, fd: i32, how: i32| {
            let how = match how {
                1 => Shutdown::Read,
                2 => Shutdown::Write,
                3 => Shutdown::Both,
                _ => return EINVAL,
            };
            with_socket(&mut caller, fd, |socket| socket.shutdown(how))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_setsockopt",
        |mut caller: Caller<'_, State>, fd: i32, _level: i32, name: i32, flag: i32, size: i32| {
            let Some(value) = read(&mut caller, flag, (size as u32 as usize).min(4)) else {
                return EFAULT;
            };
            let on = value.iter().any(|b| *b != 0);
            // SO_REUSEADDR is what a server sets; the others are accepted and left as they are.
            with_socket(&mut caller, fd, |socket| {
                if name == 0 {
                    socket.set_reuse_address(on)
                } else {
                    Ok(())
                }
            })
        },
    )?;
    for (name, peer) in [("sock_getlocaladdr", false), ("sock_getpeeraddr", true)] {
        linker.func_wrap(
            MODULE,
            name,
            move |mut caller: Caller<'_, State>, fd: i32, addr: i32, kind: i32, port: i32| {
                let found = match sockets(&mut caller).table.get(&(fd as u32)) {
                    None => return EBADF,
                    Some(socket) => {
                        if peer {
                            socket.peer_addr()
                        } else {
                            socket.local_addr()
                        }
                    }
                };
                match found.map(|a| a.as_socket()) {
                    Ok(Some(found)) => put_address(&mut caller, found, addr, kind, port),
                    Ok(None) => ENOTSUP,
                    Err(err) => errno(&err),
                }
            },
        )?;
    }
    linker.func_wrap(
        MODULE,
        "fd_close",
        move |mut caller: Caller<'_, State>, fd: i32| {
            if sockets(&mut caller).table.remove(&(fd as u32)).is_some() {
                return Ok(SUCCESS);
            }
            fd_close.typed::<i32, i32>(&caller)?.call(&mut caller, fd)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_get",
        move |mut caller: Caller<'_, State>, fd: i32, out: i32| {
            let nonblocking = match sockets(&mut caller).table.get(&(fd as u32)) {
                None => {
                    return fd_fdstat_get
                        .typed::<(i32, i32), i32>(&caller)?
                        .call(&mut caller, (fd, out))
                }
                Some(socket) => socket.nonblocking().unwrap_or(false),
            };
            // fdstat: filetype u8, flags u16 at 2, rights_base u64 at 8, rights_inheriting u64 at 16.
            let mut stat = [0u8; 24];
            stat[0] = FILETYPE_SOCKET_STREAM;
            let flags = if nonblocking { FDFLAGS_NONBLOCK } else { 0 };
            stat[2..4].copy_from_slice(&flags.to_le_bytes());
            stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
            stat[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
            Ok(if write(&mut caller, out, &stat) {
                SUCCESS
            } else {
                EFAULT
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_flags",
        move |mut caller: Caller<'_, State>, fd: i32, flags: i32| {
            if !sockets(&mut caller).table.contains_key(&(fd as u32)) {
                return fd_fdstat_set_flags
                    .typed::<(i32, i32), i32>(&caller)?
                    .call(&mut caller, (fd, flags));
            }
            let nonblocking = flags as u16 & FDFLAGS_NONBLOCK != 0;
            Ok(with_socket(&mut caller, fd, |socket| {
                socket.set_nonblocking(nonblocking)
            }))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
