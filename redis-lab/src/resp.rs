//! A minimal RESP2 client: send one command, read one reply.
//!
//! Replies are read byte by byte up to their end and never beyond, so that what follows
//! on the connection (a pub/sub message, the next reply) stays in the socket for the next
//! read, or unread, as a scenario needs.
use std::io::{self, Read, Write};

/// The longest reply line accepted (a status, an error, a length).
const MAX_LINE: usize = 64 * 1024;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$5 hello`, or `$-1` (nil)
    Bulk(Option<String>),
    /// `*2 ...`, or `*-1` (nil)
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a status or bulk reply.
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Simple(s) | Reply::Bulk(Some(s)) => Some(s),
            _ => None,
        }
    }

    /// The reply as one line of text: `+OK`, `-ERR ..`, `:1`, a bulk's text (`(nil)`
    /// for none), an array's elements flattened and joined by spaces.
    pub fn flatten(&self) -> String {
        match self {
            Reply::Simple(s) => format!("+{s}"),
            Reply::Error(s) => format!("-{s}"),
            Reply::Int(n) => format!(":{n}"),
            Reply::Bulk(Some(s)) => s.clone(),
            Reply::Bulk(None) => "(nil)".into(),
            Reply::Array(items) => items
                .iter()
                .flatten()
                .map(Reply::flatten)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// A command as a RESP array of bulk strings.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Sends one command.
pub fn send(w: &mut impl Write, args: &[&str]) -> io::Result<()> {
    w.write_all(&encode(args))
}

/// Sends one command and reads its whole reply, [flattened](Reply::flatten) to a line.
/// Bounded by the stream's read timeout ([`crate::connect`] sets 10 s).
pub fn command(s: &mut (impl Read + Write), args: &[&str]) -> io::Result<String> {
    send(s, args)?;
    Ok(read_reply(s)?.flatten())
}

/// One line without its CRLF, read byte by byte (nothing beyond it is consumed).
fn read_line(r: &mut impl Read) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() > MAX_LINE {
            return Err(io::Error::other("reply line over 64 KiB"));
        }
        if r.read(&mut b)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        line.push(b[0]);
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Reads one whole reply.
pub fn read_reply(r: &mut impl Read) -> io::Result<Reply> {
    let line = read_line(r)?;
    let bad = || io::Error::other(format!("bad RESP line {line:?}"));
    let kind = line.get(..1).ok_or_else(bad)?;
    let rest = line.get(1..).unwrap_or_default();
    let num = || rest.parse::<i64>().map_err(|_| bad());
    Ok(match kind {
        "+" => Reply::Simple(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(num()?),
        "$" => match usize::try_from(num()?) {
            Err(_) => Reply::Bulk(None),
            Ok(n) => {
                let mut buf = vec![0u8; n + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n);
                Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
        },
        "*" => match usize::try_from(num()?) {
            Err(_) => Reply::Array(None),
            Ok(n) => {
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(read_reply(r)?);
                }
                Reply::Array(Some(items))
            }
        },
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<Reply> {
        read_reply(&mut &bytes[..])
    }

    #[test]
    fn encodes_a_command_as_bulk_strings() {
        assert_eq!(
            encode(&["SET", "k", ""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn reads_each_kind_and_flattens_it() {
        let cases: [(&[u8], &str); 7] = [
            (b"+OK\r\n", "+OK"),
            (b"-ERR no\r\n", "-ERR no"),
            (b":12\r\n", ":12"),
            (b"$5\r\nhe\r\no\r\n", "he\r\no"),
            (b"$-1\r\n", "(nil)"),
            (
                b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n",
                "subscribe news :1",
            ),
            (b"*-1\r\n", ""),
        ];
        for (bytes, flat) in cases {
            let r = parse(bytes).expect("a reply");
            assert_eq!(r.flatten(), flat, "{bytes:?}");
        }
        assert_eq!(parse(b"+PONG\r\n").expect("reply").text(), Some("PONG"));
    }

    #[test]
    fn reads_one_reply_and_no_more() {
        let bytes = b"+OK\r\n:1\r\n";
        let mut r = &bytes[..];
        assert_eq!(
            read_reply(&mut r).expect("first"),
            Reply::Simple("OK".into())
        );
        assert_eq!(r, b":1\r\n");
    }

    #[test]
    fn bad_or_short_input_is_an_error() {
        for bytes in [
            &b""[..],
            b"+OK",
            b"?x\r\n",
            b":x\r\n",
            b"$3\r\nab",
            b"*2\r\n+a\r\n",
        ] {
            assert!(parse(bytes).is_err(), "{bytes:?}");
        }
        let long = [b"+".as_slice(), &vec![b'a'; MAX_LINE + 8]].concat();
        assert!(parse(&long).is_err());
    }
}
