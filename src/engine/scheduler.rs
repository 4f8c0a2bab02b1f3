//! The continuous-batching scheduler: one llama.cpp context, `parallel` sequences, one thread.
//!
//! Every step builds one batch holding the next token of each generating sequence plus prompt
//! chunks of newly admitted ones (up to `n_batch` tokens), decodes it once, and samples one token
//! per sequence that produced logits. New jobs are admitted between steps whenever a slot is
//! free; a job whose client went away (its event receiver dropped) frees its slot at the next
//! step. Jobs wait in a bounded channel; `Engine::submit` answers "overloaded" when it is full.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;

use super::model::Model;
use super::request::{Event, FinishReason, GenerateRequest, Usage};
use super::text::{StopMatcher, StopScan, Utf8Stream};
use super::{sampling, Shared};

/// How long an idle scheduler sleeps before looking at the shutdown flag again.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// A request handed to the scheduler, with the channel its events go to.
pub(super) struct Job {
    pub req: GenerateRequest,
    pub events: UnboundedSender<Event>,
}

/// A sequence being served in one slot.
struct Active {
    events: UnboundedSender<Event>,
    prompt: Vec<i32>,
    /// Prompt tokens already decoded into the KV cache.
    prefilled: usize,
    /// Next free position of this sequence in the KV cache.
    n_past: i32,
    sampler: LlamaSampler,
    /// The last sampled token, to be fed in the next step.
    next: Option<i32>,
    generated: u32,
    max_tokens: Option<u32>,
    utf8: Utf8Stream,
    stop: StopMatcher,
    /// Index in the current batch whose logits this sequence samples from.
    logits_at: Option<i32>,
}

pub(super) struct Scheduler<'m> {
    model: &'m Model,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    /// Context length per sequence: prompt plus generated tokens never exceed it.
    ctx_per_seq: i32,
    slots: Vec<Option<Active>>,
    shared: Arc<Shared>,
}

impl<'m> Scheduler<'m> {
    pub fn new(
        model: &'m Model,
        ctx: LlamaContext<'m>,
        n_batch: usize,
        ctx_per_seq: u32,
        shared: Arc<Shared>,
    ) -> Self {
        let parallel = shared.parallel as usize;
        Self {
            model,
            ctx,
            batch: LlamaBatch::new(n_batch, 1),
            n_batch,
            ctx_per_seq: ctx_per_seq as i32,
            slots: (0..parallel).map(|_| None).collect(),
            shared,
        }
    }

    /// Runs until shutdown is requested or every job sender is gone.
    pub fn run(mut self, jobs: Receiver<Job>) {
        loop {
            if self.shared.shutdown.load(Ordering::SeqCst) {
                self.abort_all(&jobs, "server shutting down");
                return;
            }
            self.drop_cancelled();
            while let Some(free) = self.slots.iter().position(Option::is_none) {
                match jobs.try_recv() {
                    Ok(job) => self.admit(free, job),
                    Err(_) => break,
                }
            }
            if self.slots.iter().all(Option::is_none) {
                match jobs.recv_timeout(IDLE_POLL) {
                    Ok(job) => self.admit(0, job),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                continue;
            }
            self.step();
        }
    }

    fn admit(&mut self, slot: usize, job: Job) {
        self.shared.stats.queue_len.fetch_sub(1, Ordering::Relaxed);
        if job.events.is_closed() {
            return; // client left while queued
        }
        let n_vocab = self.model.inner.n_vocab();
        self.shared
            .stats
            .prompt_tokens
            .fetch_add(job.req.prompt.len() as u64, Ordering::Relaxed);
        self.slots[slot] = Some(Active {
            events: job.events,
            sampler: sampling::build(&job.req.sampling, n_vocab, &self.model.eog_tokens),
            prompt: job.req.prompt,
            prefilled: 0,
            n_past: 0,
            next: None,
            generated: 0,
            max_tokens: job.req.max_tokens,
            utf8: Utf8Stream::default(),
            stop: StopMatcher::new(job.req.stop),
            logits_at: None,
        });
        self.update_busy();
    }

    /// One decode step over every active sequence.
    fn step(&mut self) {
        self.batch.clear();
        let mut n = 0usize;
        // Generating sequences first: one token each, so decoding never waits on long prompts.
        for (seq, slot) in self.slots.iter_mut().enumerate() {
            let Some(a) = slot else { continue };
            a.logits_at = None;
            if let Some(tok) = a.next.take() {
                if self
                    .batch
                    .add(LlamaToken(tok), a.n_past, &[seq as i32], true)
                    .is_err()
                {
                    a.next = Some(tok);
                    continue;
                }
                a.logits_at = Some(n as i32);
                a.n_past += 1;
                n += 1;
            }
        }
        let decoding = n;
        // Then prompt chunks of admitted sequences, as far as the batch has room.
        for (seq, slot) in self.slots.iter_mut().enumerate() {
            let Some(a) = slot else { continue };
            while a.prefilled < a.prompt.len() && n < self.n_batch {
                let last = a.prefilled + 1 == a.prompt.len();
                let tok = LlamaToken(a.prompt[a.prefilled]);
                if self.batch.add(tok, a.n_past, &[seq as i32], last).is_err() {
                    break;
                }
                if last {
                    a.logits_at = Some(n as i32);
                }
                a.prefilled += 1;
                a.n_past += 1;
                n += 1;
            }
        }
        if n == 0 {
            return;
        }
        let started = Instant::now();
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            tracing::error!("llama.cpp decode failed: {e}");
            // The KV state of every sequence in the batch is now unknown: end them all.
            for seq in 0..self.slots.len() {
                self.fail(seq, &format!("decode failed: {e}"));
            }
            return;
        }
        let mut sampled = Vec::with_capacity(self.slots.len());
        for (seq, slot) in self.slots.iter_mut().enumerate() {
            if let Some(a) = slot {
                if let Some(at) = a.logits_at {
                    sampled.push((seq, a.sampler.sample(&self.ctx, at).0));
                }
            }
        }
        // Count before answering, so a client that reads /api/status after its answer sees it.
        let busy = started.elapsed();
        self.shared
            .stats
            .record_step(sampled.len() as u64, busy, n > decoding);
        for (seq, tok) in sampled {
            self.on_token(seq, tok);
        }
    }

    /// Handles a sampled token: end of generation, text, stop strings, limits.
    fn on_token(&mut self, seq: usize, tok: i32) {
        if self.model.is_end_of_generation(tok) {
            return self.finish(seq, FinishReason::Stop, true);
        }
        let bytes = self.model.token_bytes(tok);
        let a = self.slots[seq].as_mut().expect("active slot");
        a.generated += 1;
        let text = a.utf8.push(&bytes);
        match a.stop.push(&text) {
            StopScan::Stopped(text) => {
                send_text(&a.events, text);
                return self.finish(seq, FinishReason::Stop, false);
            }
            StopScan::Continue(text) => send_text(&a.events, text),
        }
        // The new token would take position `n_past`: prompt plus completion never exceed the context.
        if a.max_tokens.is_some_and(|m| a.generated >= m) || a.n_past + 1 >= self.ctx_per_seq {
            return self.finish(seq, FinishReason::Length, true);
        }
        a.next = Some(tok);
    }

    /// Ends a sequence normally: flushes held text, sends usage, frees the slot.
    fn finish(&mut self, seq: usize, finish: FinishReason, flush: bool) {
        let Some(mut a) = self.slots[seq].take() else {
            return;
        };
        if flush {
            let rest = a.utf8.finish();
            let mut tail = match a.stop.push(&rest) {
                StopScan::Continue(t) | StopScan::Stopped(t) => t,
            };
            tail.push_str(&a.stop.finish());
            send_text(&a.events, tail);
        }
        let usage = Usage {
            prompt_tokens: a.prompt.len() as u32,
            completion_tokens: a.generated,
        };
        // Count and free the slot before answering, so a client that reads /api/status after
        // its answer sees both.
        self.shared
            .stats
            .requests_served
            .fetch_add(1, Ordering::Relaxed);
        self.free(seq);
        let _ = a.events.send(Event::Done { finish, usage });
    }

    fn fail(&mut self, seq: usize, message: &str) {
        let active = self.slots[seq].take();
        self.free(seq);
        if let Some(a) = active {
            let _ = a.events.send(Event::Error(message.to_owned()));
        }
    }

    fn free(&mut self, seq: usize) {
        self.slots[seq] = None;
        if let Err(e) = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None) {
            tracing::error!("clearing KV cache of sequence {seq}: {e}");
        }
        self.update_busy();
    }

    fn drop_cancelled(&mut self) {
        for seq in 0..self.slots.len() {
            if self.slots[seq]
                .as_ref()
                .is_some_and(|a| a.events.is_closed())
            {
                tracing::debug!(seq, "client went away; freeing slot");
                self.free(seq);
            }
        }
    }

    /// Shutdown: every running and queued request ends with an error event.
    fn abort_all(&mut self, jobs: &Receiver<Job>, message: &str) {
        for seq in 0..self.slots.len() {
            self.fail(seq, message);
        }
        while let Ok(job) = jobs.try_recv() {
            self.shared.stats.queue_len.fetch_sub(1, Ordering::Relaxed);
            let _ = job.events.send(Event::Error(message.to_owned()));
        }
    }

    fn update_busy(&self) {
        let busy = self.slots.iter().filter(|s| s.is_some()).count();
        self.shared.stats.slots_busy.store(busy, Ordering::Relaxed);
    }
}

fn send_text(events: &UnboundedSender<Event>, text: String) {
    if !text.is_empty() {
        let _ = events.send(Event::Text(text));
    }
}
