//! Manual pages from the command lines themselves (clap_mangen), so what
//! `man molde-run` says is what `molde run --help` says: one page for the
//! command and one per subcommand, named as git and docker name theirs
//! (`molde-network-create.1`). The Debian package installs them.

use std::io;
use std::path::{Path, PathBuf};

/// Writes `cmd`'s pages in manual `section` into `dir`; the files written.
pub fn write_pages(cmd: clap::Command, section: &'static str, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let name = cmd.get_name().to_string();
    page(cmd, name, section, dir, &mut written)?;
    Ok(written)
}

fn page(
    cmd: clap::Command,
    name: String,
    section: &'static str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let cmd = cmd.name(name.clone()).bin_name(name.replace('-', " "));
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        page(
            sub.clone(),
            format!("{name}-{}", sub.get_name()),
            section,
            dir,
            written,
        )?;
    }
    let path = dir.join(format!("{name}.{section}"));
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).section(section).render(&mut out)?;
    std::fs::write(&path, out)?;
    written.push(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_page_per_command_and_subcommand() {
        let cmd = clap::Command::new("tool")
            .about("Does things")
            .subcommand(
                clap::Command::new("net")
                    .about("Networks")
                    .subcommand(clap::Command::new("create").about("Creates a network")),
            )
            .subcommand(clap::Command::new("secret").hide(true));
        let dir = tempfile::tempdir().unwrap();
        let mut names: Vec<String> = super::write_pages(cmd, "1", dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["tool-net-create.1", "tool-net.1", "tool.1"]);
        let page = std::fs::read_to_string(dir.path().join("tool-net-create.1")).unwrap();
        assert!(page.contains(".TH tool-net-create 1"), "{page}");
        assert!(page.contains("Creates a network"), "{page}");
    }
}
