//! The continuous-batching scheduler: one llama.cpp context, `parallel` sequences, one thread.
//!
//! Every step asks `batch::plan` what goes in the batch (the next token of each generating
//! sequence plus prompt chunks of newly admitted ones, up to `n_batch` tokens), executes that plan
//! against llama.cpp, decodes it once, and samples one token per sequence that produced logits.
//! New jobs are admitted between steps whenever a slot is free; a job whose client went away (its
//! event receiver dropped) frees its slot at the next step. Jobs wait in a bounded channel;
//! `Engine::submit` answers "overloaded" when it is full. When nothing runs, the thread blocks on
//! that channel; `Engine::shutdown` wakes it with [`Inbound::Wake`].

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::{BatchAddError, LlamaBatch};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;

use super::batch::{self, Plan, SlotView, Tokens};
use super::model::Model;
use super::request::{Event, FinishReason, GenerateRequest, Usage};
use super::text::{StopMatcher, StopScan, Utf8Stream};
use super::{sampling, Shared};

/// What the engine handle sends the scheduler thread.
pub(super) enum Inbound {
    Job(Job),
    /// Sent by `Engine::shutdown` (after setting the flag) so an idle scheduler notices at once.
    Wake,
}

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

impl Active {
    /// What this sequence has to decode, for the planner. A sequence with a sampled token has
    /// finished its prompt (the first token is sampled from the last prompt token's logits).
    fn view(&self) -> SlotView {
        if let Some(token) = self.next {
            SlotView::Generating {
                token,
                pos: self.n_past,
            }
        } else if self.prefilled < self.prompt.len() {
            SlotView::Prefilling {
                done: self.prefilled,
                len: self.prompt.len(),
                pos: self.n_past,
            }
        } else {
            SlotView::Idle
        }
    }
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
    pub fn run(mut self, inbox: Receiver<Inbound>) {
        'run: loop {
            if self.shared.shutdown.load(Ordering::SeqCst) {
                self.abort_all(&inbox, "server shutting down");
                return;
            }
            self.drop_cancelled();
            while let Some(free) = self.slots.iter().position(Option::is_none) {
                match inbox.try_recv() {
                    Ok(Inbound::Job(job)) => self.admit(free, job),
                    Ok(Inbound::Wake) => continue 'run,
                    Err(_) => break,
                }
            }
            if self.slots.iter().all(Option::is_none) {
                // Nothing runs: block until a job comes, shutdown wakes us, or the engine is gone.
                match inbox.recv() {
                    Ok(Inbound::Job(job)) => self.admit(0, job),
                    Ok(Inbound::Wake) => {}
                    Err(_) => return,
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
        let views: Vec<SlotView> = self
            .slots
            .iter()
            .map(|s| s.as_ref().map_or(SlotView::Idle, Active::view))
            .collect();
        let plan = batch::plan(&views, self.n_batch);
        debug_assert!(plan.n_tokens() <= self.n_batch);
        for a in self.slots.iter_mut().flatten() {
            a.logits_at = None;
        }
        if plan.is_empty() {
            return;
        }
        if let Err(e) = self.execute(&plan) {
            // Cannot happen (the plan fits the batch); if it does, the sequences' state is
            // half-advanced: end them all, as for a decode error.
            tracing::error!("building the batch failed: {e}");
            for seq in 0..self.slots.len() {
                self.fail(seq, &format!("batch failed: {e}"));
            }
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
            .record_step(sampled.len() as u64, busy, plan.prefills());
        for (seq, tok) in sampled {
            self.on_token(seq, tok);
        }
    }

    /// Fills the llama.cpp batch with `plan` and advances each planned sequence: its KV
    /// position, its prefill progress, and where in the batch its logits will be.
    fn execute(&mut self, plan: &Plan) -> Result<(), BatchAddError> {
        self.batch.clear();
        let mut n = 0usize;
        for e in &plan.entries {
            let a = self.slots[e.seq].as_mut().expect("planned slot is active");
            let seq_ids = [e.seq as i32];
            match &e.tokens {
                Tokens::Sampled(tok) => {
                    self.batch
                        .add(LlamaToken(*tok), e.pos, &seq_ids, e.logits)?;
                    a.next = None;
                }
                Tokens::Prompt(range) => {
                    for (i, &tok) in a.prompt[range.clone()].iter().enumerate() {
                        let logits = e.logits && range.start + i + 1 == range.end;
                        self.batch
                            .add(LlamaToken(tok), e.pos + i as i32, &seq_ids, logits)?;
                    }
                    a.prefilled = range.end;
                }
            }
            n += e.len();
            a.n_past = e.pos + e.len() as i32;
            if e.logits {
                a.logits_at = Some(n as i32 - 1);
            }
        }
        Ok(())
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
    fn abort_all(&mut self, inbox: &Receiver<Inbound>, message: &str) {
        for seq in 0..self.slots.len() {
            self.fail(seq, message);
        }
        while let Ok(msg) = inbox.try_recv() {
            if let Inbound::Job(job) = msg {
                self.shared.stats.queue_len.fetch_sub(1, Ordering::Relaxed);
                let _ = job.events.send(Event::Error(message.to_owned()));
            }
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
