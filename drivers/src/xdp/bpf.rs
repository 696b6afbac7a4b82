//! A minimal eBPF instruction encoder: exactly the instructions cnet's XDP redirect program
//! (`redirect.rs`) uses, with forward jumps to labels. No BPF object file, no clang.
//!
//! Encoding (Linux `Documentation/bpf/standardization/instruction-set.rst`): 8 bytes per
//! instruction: `code` (class | size/op | mode/source), the register byte (destination in the low
//! nibble and source in the high nibble on a little-endian host, the other way round on a
//! big-endian one, as the kernel's `struct bpf_insn` bitfields), a signed 16-bit offset and a
//! signed 32-bit immediate, both in host byte order. `lddw` (64-bit immediate load) takes two slots.

/// Register numbers. r0 = return value / helper result, r1..r5 = helper arguments (clobbered by
/// calls), r6..r9 = callee-saved, r10 = read-only frame pointer.
pub(crate) mod reg {
    pub(crate) const R0: u8 = 0;
    pub(crate) const R1: u8 = 1;
    pub(crate) const R2: u8 = 2;
    pub(crate) const R3: u8 = 3;
    pub(crate) const R4: u8 = 4;
    pub(crate) const R5: u8 = 5;
    pub(crate) const R6: u8 = 6;
    pub(crate) const R10: u8 = 10;
}

// Instruction classes.
const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_STX: u8 = 0x03;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
// Memory sizes and modes.
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
// Operand source: immediate (K) or register (X).
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;
// ALU operations.
const ALU_ADD: u8 = 0x00;
const ALU_MOV: u8 = 0xb0;
// Jump operations.
const JMP_JA: u8 = 0x00;
const JMP_CALL: u8 = 0x80;
const JMP_EXIT: u8 = 0x90;
/// `src_reg` of an `lddw` whose immediate is a map file descriptor (`BPF_PSEUDO_MAP_FD`): the
/// verifier replaces it by the map's address.
const PSEUDO_MAP_FD: u8 = 1;

/// Size of a memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Size {
    /// 4 bytes (`BPF_W`).
    W = 0x00,
    /// 2 bytes (`BPF_H`).
    H = 0x08,
}

/// A conditional jump's comparison (unsigned, 64-bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cond {
    /// `==` (`BPF_JEQ`).
    Eq = 0x10,
    /// `>` unsigned (`BPF_JGT`).
    Gt = 0x20,
    /// `!=` (`BPF_JNE`).
    Ne = 0x50,
}

/// Kernel helper ids (`enum bpf_func_id`).
pub(crate) mod helper {
    /// `void *bpf_map_lookup_elem(map, key)`: value pointer or NULL.
    pub(crate) const MAP_LOOKUP_ELEM: i32 = 1;
    /// `long bpf_redirect_map(map, key, flags)`: `XDP_REDIRECT`, or the action in the low two
    /// bits of `flags` when `key` has no entry (Linux >= 5.3).
    pub(crate) const REDIRECT_MAP: i32 = 51;
}

/// One instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        debug_assert!(dst < 11 && src < 11, "eBPF has registers r0..r10");
        let regs = if cfg!(target_endian = "little") {
            (src << 4) | (dst & 0x0f)
        } else {
            (dst << 4) | (src & 0x0f)
        };
        Insn {
            code,
            regs,
            off,
            imm,
        }
    }

    /// The 8 bytes the kernel reads.
    #[cfg(test)]
    pub(crate) fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }

    /// Opcode byte.
    #[cfg(test)]
    pub(crate) fn code(&self) -> u8 {
        self.code
    }

    /// Jump offset (in instructions, from the next one).
    #[cfg(test)]
    pub(crate) fn off(&self) -> i16 {
        self.off
    }

    /// Immediate.
    #[cfg(test)]
    pub(crate) fn imm(&self) -> i32 {
        self.imm
    }

    /// Destination register.
    #[cfg(test)]
    pub(crate) fn dst(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs & 0x0f
        } else {
            self.regs >> 4
        }
    }

    /// Source register.
    #[cfg(test)]
    pub(crate) fn src(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0x0f
        }
    }

    /// `dst = src` (64-bit).
    pub(crate) fn mov64_reg(dst: u8, src: u8) -> Insn {
        Insn::new(CLASS_ALU64 | ALU_MOV | SRC_X, dst, src, 0, 0)
    }

    /// `dst = imm` (sign-extended to 64 bits).
    pub(crate) fn mov64_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(CLASS_ALU64 | ALU_MOV | SRC_K, dst, 0, 0, imm)
    }

    /// `dst += imm` (64-bit).
    pub(crate) fn add64_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(CLASS_ALU64 | ALU_ADD | SRC_K, dst, 0, 0, imm)
    }

    /// `dst = *(size *)(src + off)`, zero-extended.
    pub(crate) fn ldx(size: Size, dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(CLASS_LDX | size as u8 | MODE_MEM, dst, src, off, 0)
    }

    /// `*(u32 *)(dst + off) = src`.
    pub(crate) fn stx_w(dst: u8, off: i16, src: u8) -> Insn {
        Insn::new(CLASS_STX | Size::W as u8 | MODE_MEM, dst, src, off, 0)
    }

    /// `call helper`: arguments in r1..r5, result in r0; r1..r5 are clobbered.
    pub(crate) fn call(helper: i32) -> Insn {
        Insn::new(CLASS_JMP | JMP_CALL, 0, 0, 0, helper)
    }

    /// `exit`: return r0.
    pub(crate) fn exit() -> Insn {
        Insn::new(CLASS_JMP | JMP_EXIT, 0, 0, 0, 0)
    }

    /// `dst = map` (`lddw` with `BPF_PSEUDO_MAP_FD`): two slots.
    pub(crate) fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        [
            Insn::new(CLASS_LD | 0x18 | MODE_IMM, dst, PSEUDO_MAP_FD, 0, fd),
            Insn::new(0, 0, 0, 0, 0),
        ]
    }

    /// A conditional jump `if dst <cond> imm goto +off`.
    fn jmp_imm(cond: Cond, dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(CLASS_JMP | cond as u8 | SRC_K, dst, 0, off, imm)
    }

    /// A conditional jump `if dst <cond> src goto +off`.
    fn jmp_reg(cond: Cond, dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(CLASS_JMP | cond as u8 | SRC_X, dst, src, off, 0)
    }

    /// `goto +off`.
    fn ja(off: i16) -> Insn {
        Insn::new(CLASS_JMP | JMP_JA, 0, 0, off, 0)
    }

    /// True for the jumps this encoder emits (conditional and `ja`), not calls or exits.
    #[cfg(test)]
    pub(crate) fn is_jump(&self) -> bool {
        self.code & 0x07 == CLASS_JMP && !matches!(self.code & 0xf0, JMP_CALL | JMP_EXIT)
    }

    /// True for the first slot of an `lddw`.
    #[cfg(test)]
    pub(crate) fn is_lddw(&self) -> bool {
        self.code == CLASS_LD | 0x18 | MODE_IMM
    }
}

/// A jump target, placed with [`Asm::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Label(usize);

/// Assembles instructions with forward jumps to labels.
#[derive(Debug, Default)]
pub(crate) struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

/// A program could not be assembled (a label used but never placed, or a jump too far).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AsmError {
    /// The label was jumped to but never placed.
    #[error("label {0} never placed")]
    Unplaced(usize),
    /// Backward jump or offset beyond i16 (this encoder emits forward jumps only).
    #[error("jump at {at} to {to} out of range")]
    Range {
        /// Index of the jump.
        at: usize,
        /// Target index.
        to: usize,
    },
}

impl Asm {
    /// A new label, to be placed later.
    pub(crate) fn new_label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Places `l` at the next instruction.
    pub(crate) fn label(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }

    /// Appends instructions.
    pub(crate) fn push(&mut self, i: impl IntoIterator<Item = Insn>) {
        self.insns.extend(i);
    }

    /// `if dst <cond> imm goto l`.
    pub(crate) fn jmp_imm(&mut self, cond: Cond, dst: u8, imm: i32, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.insns.push(Insn::jmp_imm(cond, dst, imm, 0));
    }

    /// `if dst <cond> src goto l`.
    pub(crate) fn jmp_reg(&mut self, cond: Cond, dst: u8, src: u8, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.insns.push(Insn::jmp_reg(cond, dst, src, 0));
    }

    /// `goto l`.
    pub(crate) fn ja(&mut self, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.insns.push(Insn::ja(0));
    }

    /// Resolves the jumps: offset = target - (jump index + 1).
    pub(crate) fn finish(mut self) -> Result<Vec<Insn>, AsmError> {
        for &(at, l) in &self.fixups {
            let to = self.labels[l.0].ok_or(AsmError::Unplaced(l.0))?;
            let off = i16::try_from(to as i64 - at as i64 - 1)
                .ok()
                .filter(|o| *o >= 0)
                .ok_or(AsmError::Range { at, to })?;
            self.insns[at].off = off;
        }
        Ok(self.insns)
    }
}

#[cfg(test)]
mod tests {
    use super::reg::*;
    use super::*;

    /// Encodings as `llvm-mc -triple bpfel -show-encoding` (LLVM 14) prints them for the same
    /// assembly (`r6 = r1`, `r2 = *(u32 *)(r6 + 16)`, `if r4 > r3 goto +25`...). The map load
    /// differs only in its source register: `r1 = 5 ll` assembles with 0, libbpf sets
    /// `BPF_PSEUDO_MAP_FD` (1) there when it relocates a map reference, as done here.
    #[test]
    #[cfg(target_endian = "little")]
    fn known_encodings() {
        let hex = |i: Insn| {
            i.to_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(hex(Insn::mov64_reg(R6, R1)), "bf 16 00 00 00 00 00 00");
        assert_eq!(hex(Insn::mov64_imm(R0, 2)), "b7 00 00 00 02 00 00 00");
        assert_eq!(hex(Insn::add64_imm(R4, 14)), "07 04 00 00 0e 00 00 00");
        assert_eq!(hex(Insn::add64_imm(R2, -4)), "07 02 00 00 fc ff ff ff");
        assert_eq!(
            hex(Insn::ldx(Size::W, R2, R6, 0)),
            "61 62 00 00 00 00 00 00"
        );
        assert_eq!(
            hex(Insn::ldx(Size::W, R2, R6, 16)),
            "61 62 10 00 00 00 00 00"
        );
        assert_eq!(
            hex(Insn::ldx(Size::H, R5, R2, 12)),
            "69 25 0c 00 00 00 00 00"
        );
        assert_eq!(hex(Insn::stx_w(R10, -4, R5)), "63 5a fc ff 00 00 00 00");
        assert_eq!(hex(Insn::call(51)), "85 00 00 00 33 00 00 00");
        assert_eq!(hex(Insn::exit()), "95 00 00 00 00 00 00 00");
        let [a, b] = Insn::ld_map_fd(R1, 5);
        assert_eq!(hex(a), "18 11 00 00 05 00 00 00");
        assert_eq!(hex(b), "00 00 00 00 00 00 00 00");
        assert_eq!(
            hex(Insn::jmp_reg(Cond::Gt, R4, R3, 25)),
            "2d 34 19 00 00 00 00 00"
        );
        assert_eq!(
            hex(Insn::jmp_imm(Cond::Eq, R5, 8, 6)),
            "15 05 06 00 08 00 00 00"
        );
        assert_eq!(
            hex(Insn::jmp_imm(Cond::Ne, R0, 0, 1)),
            "55 00 01 00 00 00 00 00"
        );
        assert_eq!(hex(Insn::ja(4)), "05 00 04 00 00 00 00 00");
    }

    #[test]
    fn insn_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(
            std::mem::size_of::<Insn>(),
            std::mem::size_of::<libxdp_sys::bpf_insn>()
        );
        assert_eq!(
            std::mem::align_of::<Insn>(),
            std::mem::align_of::<libxdp_sys::bpf_insn>()
        );
        // The register byte as the kernel's bitfields see it.
        let i = Insn::mov64_reg(R6, R1);
        // SAFETY: same size and alignment (checked above), both plain integers with no padding.
        let k: libxdp_sys::bpf_insn = unsafe { std::mem::transmute(i) };
        assert_eq!((k.dst_reg(), k.src_reg()), (R6, R1));
    }

    #[test]
    fn labels_resolve_forward_and_errors_are_typed() {
        let mut a = Asm::default();
        let end = a.new_label();
        a.jmp_imm(Cond::Eq, R0, 0, end);
        a.push([Insn::mov64_imm(R0, 1)]);
        a.ja(end);
        a.push(Insn::ld_map_fd(R1, 3));
        a.label(end);
        a.push([Insn::exit()]);
        let p = a.finish().unwrap();
        assert_eq!(p[0].off(), 4);
        assert_eq!(p[2].off(), 2);

        let mut a = Asm::default();
        let never = a.new_label();
        a.ja(never);
        assert_eq!(a.finish(), Err(AsmError::Unplaced(0)));

        let mut a = Asm::default();
        let back = a.new_label();
        a.label(back);
        a.push([Insn::exit()]);
        a.ja(back);
        assert_eq!(a.finish(), Err(AsmError::Range { at: 1, to: 0 }));
    }
}
